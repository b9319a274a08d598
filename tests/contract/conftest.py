"""The provider emulators, started in this process on free ports, and one case per provider.

Each `ProviderCase` knows how to configure its provider against the running emulators
(optionally with wrong credentials or a short timeout) and how to make a fresh valid
address, so `test_provider_contract.py` runs the same checks against every provider.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from infra.emulators.server import DEV_CREDENTIALS, Emulators, EmulatorSettings, Ports
from senders.providers import create
from senders.providers.base import Provider
from senders.providers.settings import (
    ApnsSettings,
    FcmSettings,
    ProvidersSettings,
    SendgridSettings,
    SmtpSettings,
    TwilioSettings,
    VonageSettings,
    WebpushSettings,
)

SMTP_USER, SMTP_PASSWORD = "contract", "contract-password"


def _pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


def settings_for(
    ports: Ports, *, bad_auth: bool = False, timeout_s: float = 5.0
) -> ProvidersSettings:
    """Every provider pointed at the emulators on `ports`; `bad_auth` swaps in wrong secrets."""
    import json

    fcm_json: SecretStr | None = None
    if bad_auth:
        account = json.loads((DEV_CREDENTIALS / "fcm-dev-service-account.json").read_text())
        account["private_key"] = _pem(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        fcm_json = SecretStr(json.dumps(account))
    return ProvidersSettings(
        apns=ApnsSettings(
            url=f"https://127.0.0.1:{ports.apns}",
            private_key=SecretStr(_pem(ec.generate_private_key(ec.SECP256R1())))
            if bad_auth
            else None,
            timeout_s=timeout_s,
        ),
        fcm=FcmSettings(
            url=f"http://127.0.0.1:{ports.fcm}", credentials_json=fcm_json, timeout_s=timeout_s
        ),
        webpush=WebpushSettings(
            endpoint_override=f"http://127.0.0.1:{ports.fcm}",
            # Not the key the subscriptions were made with: the push service refuses it.
            vapid_private_key=SecretStr(_pem(ec.generate_private_key(ec.SECP256R1())))
            if bad_auth
            else None,
            timeout_s=timeout_s,
        ),
        twilio=TwilioSettings(
            url=f"http://127.0.0.1:{ports.twilio}",
            auth_token=SecretStr("wrong" if bad_auth else "herald-dev-token"),
            timeout_s=timeout_s,
        ),
        vonage=VonageSettings(
            url=f"http://127.0.0.1:{ports.vonage}",
            api_secret=SecretStr("wrong" if bad_auth else "herald-dev-secret"),
            timeout_s=timeout_s,
        ),
        smtp=SmtpSettings(
            port=ports.smtp,
            start_tls=True,
            ca_file=DEV_CREDENTIALS / "emulator-tls.crt",
            username=SMTP_USER,
            password=SecretStr("wrong" if bad_auth else SMTP_PASSWORD),
            timeout_s=timeout_s,
        ),
        sendgrid=SendgridSettings(
            url=f"http://127.0.0.1:{ports.sendgrid}",
            api_key=SecretStr("SG.wrong" if bad_auth else "SG.herald-dev-key"),
            timeout_s=timeout_s,
        ),
    )


def _apns_token(_: Emulators) -> str:
    return secrets.token_hex(32)


def _fcm_token(_: Emulators) -> str:
    return f"{secrets.token_urlsafe(11)}:APA91b{secrets.token_urlsafe(100)}"


def vapid_public_key() -> str:
    """The applicationServerKey of the dev VAPID key: web apps subscribe with it."""
    key = serialization.load_pem_private_key(
        (DEV_CREDENTIALS / "webpush-vapid-dev-key.pem").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _web_subscription(emu: Emulators) -> str:
    # What a browser's PushManager.subscribe() gives the web app, endpoint on the emulator.
    assert emu.ports is not None
    return emu.push_service.subscribe(f"http://127.0.0.1:{emu.ports.fcm}", vapid_public_key())


def _phone(_: Emulators) -> str:
    return f"+1415{secrets.randbelow(10**7):07d}"


def _email(_: Emulators) -> str:
    return f"user-{secrets.token_hex(6)}@example.com"


@dataclass(frozen=True)
class ProviderCase:
    provider: str
    channel: str
    make_address: Callable[[Emulators], str]
    # SMTP has no way to say how long to wait; every HTTP provider does.
    throttle_has_retry_after: bool = True
    server_error: int = 503
    # The SMTP emulator stalls at RCPT, before the message is sent: certainly not sent.
    no_answer_ambiguous: bool = True
    emulators: Emulators | None = None  # bound by the `case` fixture

    def __str__(self) -> str:
        return f"{self.provider}-{self.channel}"

    def new_address(self) -> str:
        """A fresh valid address (device token, subscription, number, mailbox)."""
        assert self.emulators is not None, "use the `case` fixture"
        return self.make_address(self.emulators)


CASES = [
    ProviderCase("apns", "push.ios", _apns_token),
    ProviderCase("fcm", "push.android", _fcm_token),
    ProviderCase("fcm", "push.web", _fcm_token),
    ProviderCase("webpush", "push.web", _web_subscription),
    ProviderCase("twilio", "sms", _phone),
    ProviderCase("vonage", "sms", _phone, server_error=502),
    ProviderCase(
        "smtp",
        "email",
        _email,
        throttle_has_retry_after=False,
        server_error=451,
        no_answer_ambiguous=False,
    ),
    ProviderCase("sendgrid", "email", _email),
]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def emulators() -> AsyncIterator[Emulators]:
    settings = EmulatorSettings(
        _env_file=None,  # type: ignore[call-arg]
        apns_port=0,
        fcm_port=0,
        twilio_port=0,
        vonage_port=0,
        smtp_port=0,
        sendgrid_port=0,
        control_port=0,
        smtp_auth_required=True,
        smtp_username=SMTP_USER,
        smtp_password=SecretStr(SMTP_PASSWORD),
    )
    emu = Emulators(settings)
    await emu.start()
    yield emu
    await emu.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def control(emulators: Emulators) -> AsyncIterator[httpx.AsyncClient]:
    assert emulators.ports is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{emulators.ports.control}") as client:
        yield client


@pytest.fixture(params=CASES, ids=str)
def case(request: pytest.FixtureRequest, emulators: Emulators) -> ProviderCase:
    param: ProviderCase = request.param
    return replace(param, emulators=emulators)


@pytest_asyncio.fixture(loop_scope="session")
async def make_provider(
    emulators: Emulators,
) -> AsyncIterator[Callable[..., Any]]:
    """`await make_provider(name, bad_auth=False, timeout_s=5)`: started, closed at teardown."""
    started: list[Provider] = []

    async def make(name: str, **kwargs: Any) -> Provider:
        assert emulators.ports is not None
        provider = create(name, settings_for(emulators.ports, **kwargs))
        await provider.start()
        started.append(provider)
        return provider

    yield make
    for provider in started:
        await provider.close()
