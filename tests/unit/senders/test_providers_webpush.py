"""Web Push provider: RFC 8291 encryption (the RFC's own test vector), VAPID, subscriptions."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.emulators.webpush import decrypt
from senders.providers.base import DeliveryError, Message, PermanentError
from senders.providers.settings import WebpushSettings
from senders.providers.webpush import (
    VapidSigner,
    WebpushProvider,
    b64url,
    b64url_decode,
    encrypt,
    parse_subscription,
)

# RFC 8291 §5 (https://www.rfc-editor.org/rfc/rfc8291#section-5)
RFC = {
    "plaintext": b"When I grow up, I want to be a watermelon",
    "as_private": "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw",
    "ua_private": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
    "ua_public": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6"
    "SRpkNtoIAiw4",
    "auth": "BTBZMqHH6r4Tts7J_aSIgg",
    "salt": "DGv6ra1nlYgDCS1FRnbzlw",
    "body": "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLoc"
    "InmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWG"
    "NWQexSgSxsj_Qulcy4a-fN",
}


def private(b64: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(b64), "big"), ec.SECP256R1())


def test_rfc_8291_test_vector() -> None:
    body = encrypt(
        RFC["plaintext"],  # type: ignore[arg-type]
        b64url_decode(str(RFC["ua_public"])),
        b64url_decode(str(RFC["auth"])),
        salt=b64url_decode(str(RFC["salt"])),
        as_private=private(str(RFC["as_private"])),
    )
    assert b64url(body) == RFC["body"]
    ua = private(str(RFC["ua_private"]))
    assert decrypt(body, ua, b64url_decode(str(RFC["auth"]))) == RFC["plaintext"]


def test_round_trip_with_fresh_keys() -> None:
    ua = ec.generate_private_key(ec.SECP256R1())
    p256dh = ua.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    first = encrypt(b"hello", p256dh, b"0123456789abcdef")
    second = encrypt(b"hello", p256dh, b"0123456789abcdef")
    assert first != second  # fresh salt and ephemeral key per message
    assert decrypt(first, ua, b"0123456789abcdef") == b"hello"


def test_vapid_jwt_is_reused_per_audience_and_renewed_before_expiry() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = [1_800_000_000.0]
    signer = VapidSigner(key, "mailto:ops@example.com", clock=lambda: now[0])
    a = signer.header("https://fcm.googleapis.com")
    assert signer.header("https://fcm.googleapis.com") == a
    assert signer.header("https://updates.push.services.mozilla.com") != a
    token = a.split("t=")[1].split(",")[0]
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["ES256"],
        audience="https://fcm.googleapis.com",
        options={"verify_exp": False},
    )
    assert claims["sub"] == "mailto:ops@example.com"
    assert claims["exp"] - now[0] <= 24 * 3600
    assert a.endswith(f"k={signer.public_key}")
    now[0] += 7 * 3600  # past half of its 12 h life: a new one
    assert signer.header("https://fcm.googleapis.com") != a


@pytest.mark.parametrize(
    "address",
    [
        '{"endpoint": "https://x"}',
        '{"endpoint": "https://x", "keys": {"p256dh": "AA", "auth": "AA"}}',
        "{not json",
    ],
)
def test_malformed_subscription_is_a_rejected_address(address: str) -> None:
    with pytest.raises(PermanentError) as err:
        parse_subscription(address)
    assert err.value.invalid_address


def test_an_fcm_token_is_refused_without_condemning_the_device() -> None:
    with pytest.raises(PermanentError) as err:
        parse_subscription("abcdefgh:APA91b" + "x" * 100)
    assert not err.value.invalid_address


def subscription() -> str:
    ua = ec.generate_private_key(ec.SECP256R1())
    p256dh = ua.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return json.dumps(
        {
            "endpoint": "https://fcm.googleapis.com/fcm/send/abc",
            "keys": {"p256dh": b64url(p256dh), "auth": b64url(b"0" * 16)},
        }
    )


async def answered(status: int, override: str | None = None) -> tuple[Any, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers={"location": "/m/1", "retry-after": "4"})

    p = WebpushProvider(WebpushSettings(endpoint_override=override))
    await p.start()
    assert p._client is not None
    await p._client.aclose()
    p._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    msg = Message("d-1", "n-1", "push.web", subscription(), "body", title="t", collapse_key="k")
    try:
        return await p.send(msg), seen
    except DeliveryError as exc:
        return exc, seen


async def test_request_goes_to_the_endpoint_with_vapid_and_encryption_headers() -> None:
    result, [req] = await answered(201)
    assert result.message_id == "/m/1"
    assert str(req.url) == "https://fcm.googleapis.com/fcm/send/abc"
    assert req.headers["content-encoding"] == "aes128gcm"
    assert req.headers["authorization"].startswith("vapid t=")
    assert int(req.headers["ttl"]) > 0
    assert req.headers["x-herald-delivery-id"] == "d-1"


async def test_endpoint_override_sends_to_the_emulator() -> None:
    _, [req] = await answered(201, override="http://127.0.0.1:9999")
    assert str(req.url) == "http://127.0.0.1:9999/fcm/send/abc"


@pytest.mark.parametrize(
    ("status", "retriable", "invalid"),
    [
        (404, False, True),
        (410, False, True),
        (400, False, False),
        (403, False, False),
        (413, False, False),
        (429, True, False),
        (503, True, False),
    ],
)
async def test_error_mapping(status: int, retriable: bool, invalid: bool) -> None:
    err, _ = await answered(status)
    assert (err.retriable, err.invalid_address) == (retriable, invalid)
