"""Services refuse to start with a secret whose value is published in herald's source,
unless the dev profile is set explicitly."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typer.testing import CliRunner

import herald.ops.tracking
import processors.__main__
from herald.ops.settings import OpsSettings
from processors.settings import ProcessorSettings
from producers.cli import app as intake_cli
from producers.settings import IntakeSettings

PUBLISHED = {
    "HERALD_CONTACTS__HMAC_KEY",
    "HERALD_TRACKING__SECRET",
    "HERALD_TRACKING_SERVER__APP_KEYS",
    "HERALD_LINKS__SECRET",
}


class Started(Exception):
    """Raised where a service would connect: the secrets check let it through."""


def _started(*args: object, **kwargs: object) -> None:
    raise Started


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("HERALD_PROFILE", raising=False)
    for name in PUBLISHED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("uvicorn.run", _started)
    monkeypatch.setattr(processors.__main__, "_connect", _started)
    monkeypatch.setattr(herald.ops.tracking, "Producer", _started)
    # Left real, these would replace the test run's log handlers.
    monkeypatch.setattr("infra.logging.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(processors.__main__, "configure_logging", lambda *a, **k: None)
    return monkeypatch


def _send_api() -> None:
    result = CliRunner().invoke(intake_cli, ["api"])
    if result.exception is not None:
        raise result.exception


SERVICES: list[tuple[Callable[[], None], set[str]]] = [
    (_send_api, {"HERALD_CONTACTS__HMAC_KEY", "HERALD_LINKS__SECRET"}),
    (processors.__main__.main, {"HERALD_TRACKING__SECRET", "HERALD_LINKS__SECRET"}),
    (herald.ops.tracking.main, {"HERALD_TRACKING__SECRET", "HERALD_TRACKING_SERVER__APP_KEYS"}),
]


@pytest.mark.parametrize(("start", "names"), SERVICES)
def test_a_service_refuses_published_secrets(
    production: pytest.MonkeyPatch, start: Callable[[], None], names: set[str]
) -> None:
    with pytest.raises(SystemExit) as err:
        start()
    for name in names:
        assert name in str(err.value.code)


@pytest.mark.parametrize(("start", "names"), SERVICES)
def test_the_dev_profile_or_own_secrets_let_it_start(
    production: pytest.MonkeyPatch, start: Callable[[], None], names: set[str]
) -> None:
    production.setenv("HERALD_PROFILE", "dev")
    with pytest.raises(Started):
        start()
    production.delenv("HERALD_PROFILE")
    for name in names:
        production.setenv(name, '["own"]' if name.endswith("APP_KEYS") else "own-secret")
    with pytest.raises(Started):
        start()


def test_published_secrets_are_named_per_settings() -> None:
    links = "HERALD_LINKS__SECRET"
    assert IntakeSettings(profile="").published_secrets() == ["HERALD_CONTACTS__HMAC_KEY", links]
    assert ProcessorSettings(profile="").published_secrets() == ["HERALD_TRACKING__SECRET", links]
    off = ProcessorSettings(profile="", tracking={"enabled": False})
    assert off.published_secrets() == [links]  # the tracking key signs nothing then
    assert set(OpsSettings(profile="").published_secrets()) == PUBLISHED - {
        "HERALD_CONTACTS__HMAC_KEY",
        links,
    }
