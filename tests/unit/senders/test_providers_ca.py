"""Every HTTP provider takes a CA file (an extra trust anchor: a private PKI, a TLS-inspecting
proxy, the emulators' certificate), not only APNs."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from senders.providers import PROVIDERS, create
from senders.providers._h2 import H2Client
from senders.providers._http1 import LeanClient
from senders.providers.settings import DEV_CREDENTIALS, ProvidersSettings

CA = DEV_CREDENTIALS / "emulator-tls.crt"


def _trusts_emulator(context: ssl.SSLContext) -> bool:
    # The emulator's self-signed leaf is the one non-CA certificate a context can hold
    # (get_ca_certs lists CA certificates only).
    stats = context.cert_store_stats()
    return stats["x509"] > stats["x509_ca"]


def _contexts(client: httpx.AsyncClient | H2Client | LeanClient) -> list[ssl.SSLContext]:
    if isinstance(client, H2Client):
        return [client._ssl] if client._ssl else []
    if isinstance(client, LeanClient):
        return [client.ssl_context]
    # Mounted transports (firebase-admin mounts http:// and https://) replace the default.
    transports: list[Any] = list(client._mounts.values()) or [client._transport]
    out = []
    for t in transports:
        t = getattr(t, "_wrapped_transport", t)  # firebase-admin's retry wrapper
        pool = getattr(t, "_pool", None)
        if pool is not None:
            out.append(pool._ssl_context)
    return out


def _client(provider: Any) -> httpx.AsyncClient | H2Client | LeanClient:
    return provider._client  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["apns", "fcm", "webpush", "twilio", "vonage", "sendgrid"])
async def test_an_http_provider_trusts_its_ca_file(name: str) -> None:
    section = {"ca_file": str(CA)}
    if name == "webpush":
        section["endpoint_override"] = "https://127.0.0.1:8444"
    if name == "fcm":
        section["url"] = "https://127.0.0.1:8444"
    settings = ProvidersSettings.model_validate({name: section})
    provider = create(name, settings)
    await provider.start()
    try:
        contexts = _contexts(_client(provider))
        assert contexts and all(_trusts_emulator(c) for c in contexts)
    finally:
        await provider.close()


def test_every_http_provider_has_the_setting() -> None:
    http = set(PROVIDERS) - {"smtp", "null", "inapp"}  # inapp writes to Cassandra
    assert all("ca_file" in type(getattr(ProvidersSettings(), n)).model_fields for n in http)
