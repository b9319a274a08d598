"""Settings of every provider module: one section per provider, nested by the sender service
under `providers` (env `HERALD_PROVIDERS__<PROVIDER>__<FIELD>`).

The defaults point at the local emulators (`python -m infra.emulators`) and their published
emulator-only credentials, so a fresh clone delivers somewhere; real credentials and URLs
switch a provider to the real service by configuration alone (see docs/providers.md).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator

# Emulator-only credentials, published on purpose (see the README beside them).
DEV_CREDENTIALS = Path(__file__).resolve().parents[2] / "infra" / "emulators" / "dev-credentials"


def _blank_is_none(v: object) -> object:
    # An env var set to "" turns a default path off (pydantic would read it as ".").
    return None if v == "" else v


class ApnsSettings(BaseModel):
    # Real: https://api.push.apple.com (production) or https://api.sandbox.push.apple.com.
    url: str = "https://127.0.0.1:8443"
    team_id: str = "HERALDDEV1"
    key_id: str = "DEVKEY0001"
    # The .p8 signing key from Apple; `private_key` (PEM text) wins over `key_file`.
    key_file: Path | None = DEV_CREDENTIALS / "apns-dev-key.p8"
    private_key: SecretStr | None = None
    topic: str = "dev.herald.app"  # the app's bundle id
    # Extra trust anchor on top of the system CAs; the default trusts only the emulator's
    # localhost certificate. Set it to "" for the real APNs.
    ca_file: Path | None = DEV_CREDENTIALS / "emulator-tls.crt"
    # Apple rejects tokens older than 60 min and throttles refreshes more often than 20 min.
    token_refresh_s: float = 50 * 60
    timeout_s: float = 10.0
    # Each HTTP/2 connection carries many concurrent streams; a few connections suffice.
    max_connections: int = 4

    _paths = field_validator("key_file", "ca_file", mode="before")(_blank_is_none)


class FcmSettings(BaseModel):
    # Real: https://fcm.googleapis.com.
    url: str = "http://127.0.0.1:8444"
    # Service-account JSON; `credentials_json` (its text) wins over `credentials_file`.
    credentials_file: Path | None = DEV_CREDENTIALS / "fcm-dev-service-account.json"
    credentials_json: SecretStr | None = None
    project_id: str | None = None  # defaults to the service account's project
    # OAuth2 token endpoint; defaults to the service account's `token_uri`, except that a
    # local one (the emulator's) follows `url`, so emulators on other ports just work.
    token_uri: str | None = None
    timeout_s: float = 10.0
    # HTTP/2 connections at most; each carries as many streams as FCM allows.
    max_connections: int = 4
    # Extra trust anchor on top of the system CAs (a private PKI, a TLS-inspecting proxy).
    ca_file: Path | None = None

    _paths = field_validator("credentials_file", "ca_file", mode="before")(_blank_is_none)


class WebpushSettings(BaseModel):
    # The VAPID key pair identifies this application server to the browsers' push services;
    # its public half is the `applicationServerKey` the web app subscribes with.
    vapid_key_file: Path | None = DEV_CREDENTIALS / "webpush-vapid-dev-key.pem"
    vapid_private_key: SecretStr | None = None  # PEM text; wins over the file
    subject: str = "mailto:ops@herald.example"  # a contact for the push services
    # Sends every subscription's push to this origin (the emulator) instead of its
    # endpoint's; set it to "" for the real push services.
    endpoint_override: str | None = "http://127.0.0.1:8444"
    timeout_s: float = 10.0
    max_connections: int = 50
    # Extra trust anchor on top of the system CAs (a private PKI, a TLS-inspecting proxy).
    ca_file: Path | None = None

    _paths = field_validator("vapid_key_file", "endpoint_override", "ca_file", mode="before")(
        _blank_is_none
    )


class TwilioSettings(BaseModel):
    # Real: https://api.twilio.com.
    url: str = "http://127.0.0.1:8445"
    account_sid: str = "ACherald0000000000000000000000dev"
    auth_token: SecretStr = SecretStr("herald-dev-token")
    from_number: str | None = "+15005550006"
    messaging_service_sid: str | None = None  # used instead of `from_number` when set
    timeout_s: float = 10.0
    max_connections: int = 50
    # Extra trust anchor on top of the system CAs (a private PKI, a TLS-inspecting proxy).
    ca_file: Path | None = None

    _paths = field_validator("ca_file", mode="before")(_blank_is_none)


class VonageSettings(BaseModel):
    # Real: https://rest.nexmo.com.
    url: str = "http://127.0.0.1:8446"
    api_key: str = "heralddev"
    api_secret: SecretStr = SecretStr("herald-dev-secret")
    sender: str = "herald"  # the `from` field: alphanumeric sender id or a number
    timeout_s: float = 10.0
    max_connections: int = 50
    # Extra trust anchor on top of the system CAs (a private PKI, a TLS-inspecting proxy).
    ca_file: Path | None = None

    _paths = field_validator("ca_file", mode="before")(_blank_is_none)


class SmtpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8025
    use_tls: bool = False  # implicit TLS (port 465 style)
    start_tls: bool = False  # STARTTLS after EHLO (port 587 style)
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    validate_certs: bool = True
    from_address: str = "herald <notifications@herald.example>"
    message_id_domain: str = "herald.example"
    timeout_s: float = 10.0
    # Connections opened as concurrent sends need them, one message at a time on each (2
    # round trips per message with PIPELINING, 4 without); a relay limits connections per
    # client (Postfix: 50).
    pool_size: int = 32

    _paths = field_validator("ca_file", mode="before")(_blank_is_none)


class SendgridSettings(BaseModel):
    # Real: https://api.sendgrid.com.
    url: str = "http://127.0.0.1:8447"
    api_key: SecretStr = SecretStr("SG.herald-dev-key")
    from_address: str = "notifications@herald.example"
    from_name: str | None = "herald"
    timeout_s: float = 10.0
    max_connections: int = 50
    # Extra trust anchor on top of the system CAs (a private PKI, a TLS-inspecting proxy).
    ca_file: Path | None = None

    _paths = field_validator("ca_file", mode="before")(_blank_is_none)


class InappSettings(BaseModel):
    # How long an item stays in a user's feed (the send API's HERALD_INBOX__TTL_S says
    # the same for the state it writes; keep them equal).
    ttl_s: int = 90 * 86_400


class NullSettings(BaseModel):
    """The null provider (benchmarks only) has nothing to configure."""


class ProvidersSettings(BaseModel):
    apns: ApnsSettings = Field(default_factory=ApnsSettings)
    fcm: FcmSettings = Field(default_factory=FcmSettings)
    webpush: WebpushSettings = Field(default_factory=WebpushSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    vonage: VonageSettings = Field(default_factory=VonageSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    sendgrid: SendgridSettings = Field(default_factory=SendgridSettings)
    inapp: InappSettings = Field(default_factory=InappSettings)
    null: NullSettings = Field(default_factory=NullSettings)
