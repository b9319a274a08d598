"""FCM provider: message building and the firebase-admin error mapping (no server)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth.exceptions
import pytest

from senders.providers._h2 import Response, StreamError
from senders.providers.base import Message
from senders.providers.fcm import (
    FcmProvider,
    _service_account,
    answer_error,
    build_message,
    map_error,
)
from senders.providers.settings import FcmSettings

TOKEN = "cXyZ12345:APA91b" + "x" * 140


def msg(**kw: Any) -> Message:
    base: dict[str, Any] = {
        "delivery_id": "d-1",
        "notification_id": "n-1",
        "channel": "push.android",
        "address": TOKEN,
        "body": "hello",
        "title": "Hi",
        "data": {"order": "7"},
    }
    return Message(**{**base, **kw})


def response(status: int, fcm_code: str | None = None, retry_after: str | None = None) -> Response:
    body: dict[str, Any] = {"error": {"code": status, "status": "X", "details": []}}
    if fcm_code:
        body["error"]["details"].append(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}
        )
    headers = {b"retry-after": retry_after.encode()} if retry_after else {}
    return Response(status, headers, json.dumps(body).encode())


def test_android_message_carries_ids_ttl_priority_and_collapse_key() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    m = build_message(
        msg(priority="high", collapse_key="order-7", expires_at=now + timedelta(hours=2)), now=now
    )
    assert m.token == TOKEN
    assert m.data == {
        "order": "7",
        "herald_delivery_id": "d-1",
        "herald_notification_id": "n-1",
    }
    assert m.android is not None
    assert (m.android.priority, m.android.ttl, m.android.collapse_key) == ("high", 7200, "order-7")
    assert m.notification is not None and m.notification.title == "Hi"


def test_expired_message_gets_zero_ttl_and_long_ones_are_capped() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    past = build_message(msg(expires_at=now - timedelta(minutes=1)), now=now)
    far = build_message(msg(expires_at=now + timedelta(days=90)), now=now)
    assert past.android is not None and past.android.ttl == 0
    assert far.android is not None and far.android.ttl == 28 * 24 * 3600


def test_web_push_uses_webpush_config() -> None:
    m = build_message(msg(channel="push.web", priority="high"))
    assert m.android is None
    assert m.webpush is not None
    assert m.webpush.headers == {"Urgency": "high"}
    assert m.webpush.notification is not None and m.webpush.notification.body == "hello"


@pytest.mark.parametrize(
    ("answer", "retriable", "invalid"),
    [
        (response(404, "UNREGISTERED"), False, True),
        (response(403, "SENDER_ID_MISMATCH"), False, True),
        (response(400, "INVALID_ARGUMENT"), False, False),
        (response(401), False, False),
        (response(429, "QUOTA_EXCEEDED", "30"), True, False),
        (response(503, "UNAVAILABLE", "5"), True, False),
        (response(500, "INTERNAL"), True, False),
    ],
)
def test_answer_mapping(answer: Response, retriable: bool, invalid: bool) -> None:
    err = answer_error(answer)
    assert err.retriable is retriable
    assert err.invalid_address is invalid
    assert err.provider == "fcm"
    assert err.ambiguous is None  # answered: the runtime infers it from the status


@pytest.mark.parametrize(
    ("exc", "retriable", "ambiguous"),
    [
        (StreamError("connect: ConnectionRefusedError", sent=False), True, False),
        (StreamError("stream reset: REFUSED_STREAM", sent=False), True, False),
        (StreamError("timeout", sent=True), True, True),
        (google.auth.exceptions.RefreshError("invalid_grant", retryable=False), False, False),
        (google.auth.exceptions.RefreshError("server", retryable=True), True, False),
        (google.auth.exceptions.TransportError("down"), True, False),
        (ValueError("bad ttl"), False, False),
    ],
)
def test_no_answer_mapping(exc: Exception, retriable: bool, ambiguous: bool) -> None:
    err = map_error(exc)
    assert (err.retriable, err.ambiguous, err.provider) == (retriable, ambiguous, "fcm")


def test_error_reason_names_the_fcm_code_and_retry_after_is_honoured() -> None:
    err = answer_error(response(429, "QUOTA_EXCEEDED", "30"))
    assert err.reason == "fcm:429 QUOTA_EXCEEDED"
    assert err.retry_after == 30


class Credential:
    """google-auth credentials that count refreshes."""

    def __init__(self) -> None:
        self.valid = False
        self.token: str | None = None
        self.refreshes = 0

    def refresh(self, request: object) -> None:
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.valid = True


async def test_access_token_is_minted_once_and_reused_until_near_expiry() -> None:
    provider = FcmProvider(FcmSettings())
    await provider.start()
    credential = Credential()
    provider._credential = credential  # type: ignore[assignment]
    try:
        tokens = await asyncio.gather(*(provider._access_token() for _ in range(20)))
        assert set(tokens) == {"token-1"} and credential.refreshes == 1
        credential.valid = False  # google-auth: expired, or within its refresh threshold
        assert await provider._access_token() == "token-2"
    finally:
        await provider.close()


def test_local_token_uri_follows_the_fcm_url_and_real_ones_are_kept(tmp_path: Any) -> None:
    account = {"project_id": "p", "token_uri": "http://127.0.0.1:8444/token"}
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(account))
    emulated = _service_account(FcmSettings(url="http://127.0.0.1:9999", credentials_file=path))
    assert emulated["token_uri"] == "http://127.0.0.1:9999/token"

    path.write_text(json.dumps({**account, "token_uri": "https://oauth2.googleapis.com/token"}))
    real = _service_account(FcmSettings(url="https://fcm.googleapis.com", credentials_file=path))
    assert real["token_uri"] == "https://oauth2.googleapis.com/token"

    pinned = _service_account(
        FcmSettings(credentials_file=path, token_uri="https://tokens.example/token")
    )
    assert pinned["token_uri"] == "https://tokens.example/token"
