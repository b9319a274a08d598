"""APNs provider: JWT reuse and refresh, request headers, error mapping (no server)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from senders.providers._h2 import Response, StreamError
from senders.providers.apns import ApnsProvider, ProviderToken, build_request
from senders.providers.base import Message, PermanentError, RetriableError
from senders.providers.settings import ApnsSettings


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def msg(**kw: Any) -> Message:
    base: dict[str, Any] = {
        "delivery_id": "8a3c6a8e-5c55-5f38-9a4e-111111111111",
        "notification_id": "n-1",
        "channel": "push.ios",
        "address": "ab" * 32,
        "body": "hello",
        "title": "Hi",
    }
    return Message(**{**base, **kw})


def test_token_is_signed_es256_with_kid_and_team(key: ec.EllipticCurvePrivateKey) -> None:
    clock = Clock()
    token = ProviderToken(
        team_id="TEAM", key_id="KID", private_key=pem(key), max_age_s=3000, clock=clock
    ).get()

    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KID", "typ": "JWT"}
    claims = jwt.decode(
        token, key.public_key(), algorithms=["ES256"], options={"verify_iat": False}
    )
    assert claims == {"iss": "TEAM", "iat": int(clock.now)}


def test_token_is_reused_until_max_age_then_refreshed(key: ec.EllipticCurvePrivateKey) -> None:
    clock = Clock()
    tokens = ProviderToken(
        team_id="T", key_id="K", private_key=pem(key), max_age_s=3000, clock=clock
    )
    first = tokens.get()

    clock.now += 2999
    assert tokens.get() == first
    clock.now += 1
    refreshed = tokens.get()
    assert refreshed != first
    clock.now += 10
    assert tokens.get() == refreshed


def test_expire_refreshes_only_the_current_token(key: ec.EllipticCurvePrivateKey) -> None:
    clock = Clock()
    tokens = ProviderToken(
        team_id="T", key_id="K", private_key=pem(key), max_age_s=3000, clock=clock
    )
    old = tokens.get()
    clock.now += 5
    tokens.expire(old)
    new = tokens.get()
    assert new != old
    # A second send that failed with the old token must not sign yet another one.
    clock.now += 5
    tokens.expire(old)
    assert tokens.get() == new


def test_alert_headers_and_payload() -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    headers, payload = build_request(
        msg(collapse_key="order-7", expires_at=expires, data={"order": "7", "aps": "x"}), "app.id"
    )
    assert headers["apns-topic"] == "app.id"
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-id"] == headers["x-herald-delivery-id"] == msg().delivery_id
    assert headers["apns-expiration"] == str(int(expires.timestamp()))
    assert headers["apns-collapse-id"] == "order-7"
    assert payload["aps"] == {"alert": {"title": "Hi", "body": "hello"}, "sound": "default"}
    assert payload["order"] == "7"


def test_low_priority_and_background_pushes_use_priority_5() -> None:
    low, _ = build_request(msg(priority="low"), "t")
    assert (low["apns-push-type"], low["apns-priority"]) == ("alert", "5")
    bg, payload = build_request(msg(body="", title=None, priority="high"), "t")
    assert (bg["apns-push-type"], bg["apns-priority"]) == ("background", "5")
    assert payload["aps"] == {"content-available": 1}
    assert "apns-expiration" not in bg and "apns-collapse-id" not in bg


Handler = Callable[[dict[str, str]], Response]


class FakeClient:
    """Stands in for `_h2.H2Client`: answers each request's headers with `handler`."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def request(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> Response:
        return self._handler({k.decode(): v.decode() for k, v in headers})


def answer(status: int, body: dict[str, str] | None = None, **headers: str) -> Response:
    return Response(
        status,
        {k.replace("_", "-").encode(): v.encode() for k, v in headers.items()},
        json.dumps(body).encode() if body else b"",
    )


async def _send_with_answer(
    key: ec.EllipticCurvePrivateKey,
    status: int,
    reason: str,
    headers: dict[str, str] | None = None,
    seen: list[str] | None = None,
) -> tuple[Exception, ApnsProvider]:
    def handler(request: dict[str, str]) -> Response:
        if seen is not None:
            seen.append(request["authorization"])
        return answer(status, {"reason": reason}, **(headers or {}))

    provider = ApnsProvider(ApnsSettings(private_key=pem(key), ca_file=None))  # type: ignore[arg-type]
    await provider.start()
    await provider.close()
    provider._client = FakeClient(handler)  # type: ignore[assignment]
    with pytest.raises((PermanentError, RetriableError)) as err:
        await provider.send(msg())
    return err.value, provider


@pytest.mark.parametrize(
    ("status", "reason", "retriable", "invalid"),
    [
        (400, "BadDeviceToken", False, True),
        (400, "DeviceTokenNotForTopic", False, True),
        (410, "Unregistered", False, True),
        (400, "BadCollapseId", False, False),
        (403, "InvalidProviderToken", False, False),
        (413, "PayloadTooLarge", False, False),
        (429, "TooManyRequests", True, False),
        (500, "InternalServerError", True, False),
        (503, "ServiceUnavailable", True, False),
    ],
)
async def test_error_mapping(
    key: ec.EllipticCurvePrivateKey, status: int, reason: str, retriable: bool, invalid: bool
) -> None:
    err, _ = await _send_with_answer(key, status, reason, {"retry_after": "12"})
    assert err.retriable is retriable  # type: ignore[attr-defined]
    assert err.invalid_address is invalid  # type: ignore[attr-defined]
    assert err.reason == f"apns:{status} {reason}"  # type: ignore[attr-defined]
    if retriable:
        assert err.retry_after == 12  # type: ignore[attr-defined]


async def test_expired_provider_token_is_retried_with_a_new_token(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    expired: list[str] = []
    err, provider = await _send_with_answer(key, 403, "ExpiredProviderToken", seen=expired)
    assert isinstance(err, RetriableError)
    assert err.retry_after == 0
    seen: list[str] = []

    def ok(request: dict[str, str]) -> Response:
        seen.append(request["authorization"])
        return answer(200, apns_id=request["apns-id"])

    provider._client = FakeClient(ok)  # type: ignore[assignment]
    await provider.send(msg())
    await provider.send(msg())
    assert len(set(seen)) == 1
    assert seen[0] != expired[0]


async def test_connection_failure_is_retriable(key: ec.EllipticCurvePrivateKey) -> None:
    def refuse(request: dict[str, str]) -> Response:
        raise StreamError("connect: ConnectionRefusedError", sent=False)

    provider = ApnsProvider(ApnsSettings(private_key=pem(key)))  # type: ignore[arg-type]
    await provider.start()
    await provider.close()
    provider._client = FakeClient(refuse)  # type: ignore[assignment]
    with pytest.raises(RetriableError) as err:
        await provider.send(msg())
    assert err.value.reason == "apns:connect: ConnectionRefusedError"
    assert err.value.ambiguous is False
    assert json.dumps(err.value.reason).find("ab" * 32) == -1
