"""Provider registry and settings: names resolve lazily, env nests under `providers`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from senders import providers
from senders.providers.base import Provider
from senders.providers.settings import ProvidersSettings


class _Service(BaseSettings):
    """Stands in for a service's settings class, which nests the providers the same way."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", env_nested_delimiter="__")
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)


@pytest.mark.parametrize("name", sorted(providers.PROVIDERS))
def test_every_registered_provider_loads_under_its_own_name(name: str) -> None:
    cls = providers.load(name)
    assert issubclass(cls, Provider)
    assert cls.name == name
    assert cls.channels
    instance = providers.create(name, ProvidersSettings())
    assert isinstance(instance, cls)
    assert isinstance(instance.settings, type(getattr(ProvidersSettings(), name)))  # type: ignore[attr-defined]


def test_create_passes_the_providers_own_section() -> None:
    settings = ProvidersSettings()
    settings.twilio.account_sid = "AC42"
    provider = providers.create("twilio", settings)
    assert provider.settings.account_sid == "AC42"  # type: ignore[attr-defined]


def test_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="apns"):
        providers.load("pigeon")


def test_registry_import_is_lazy() -> None:
    # firebase-admin is heavy: a process that only sends SMS must not import it.
    code = (
        "import sys, senders.providers as p; p.load('twilio');"
        "print('firebase_admin' in sys.modules, 'senders.providers.fcm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_env_configures_nested_provider_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_PROVIDERS__APNS__KEY_ID", "ABC123")
    monkeypatch.setenv("HERALD_PROVIDERS__APNS__URL", "https://api.push.apple.com")
    monkeypatch.setenv("HERALD_PROVIDERS__APNS__CA_FILE", "")
    monkeypatch.setenv("HERALD_PROVIDERS__TWILIO__AUTH_TOKEN", "s3cret")
    monkeypatch.setenv("HERALD_PROVIDERS__SMTP__PORT", "2525")
    s = _Service().providers
    assert s.apns.key_id == "ABC123"
    assert s.apns.url == "https://api.push.apple.com"
    assert s.apns.ca_file is None
    assert s.twilio.auth_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.smtp.port == 2525


def test_defaults_point_at_the_local_emulators() -> None:
    from infra.emulators.server import EmulatorSettings

    s, e = ProvidersSettings(), EmulatorSettings()
    assert s.apns.url.endswith(f":{e.apns_port}")
    assert s.fcm.url.endswith(f":{e.fcm_port}")
    assert s.twilio.url.endswith(f":{e.twilio_port}")
    assert s.vonage.url.endswith(f":{e.vonage_port}")
    assert s.sendgrid.url.endswith(f":{e.sendgrid_port}")
    assert s.smtp.port == e.smtp_port
    assert s.apns.key_file is not None and s.apns.key_file.is_file()
    assert s.fcm.credentials_file is not None and s.fcm.credentials_file.is_file()
    assert (s.twilio.auth_token, s.vonage.api_secret, s.sendgrid.api_key) == (
        e.twilio_auth_token,
        e.vonage_api_secret,
        e.sendgrid_api_key,
    )
