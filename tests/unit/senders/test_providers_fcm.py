"""FCM provider: message building and the firebase-admin error mapping (no server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth.exceptions
import pytest
import requests
import urllib3.exceptions
from firebase_admin import exceptions, messaging

from senders.providers.base import Message
from senders.providers.fcm import _service_account, build_message, map_error
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


def response(
    status: int, fcm_code: str | None = None, retry_after: str | None = None
) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    body: dict[str, Any] = {"error": {"code": status, "status": "X", "details": []}}
    if fcm_code:
        body["error"]["details"].append(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}
        )
    resp._content = json.dumps(body).encode()
    if retry_after:
        resp.headers["Retry-After"] = retry_after
    return resp


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
    ("exc", "retriable", "invalid"),
    [
        (
            messaging.UnregisteredError("gone", http_response=response(404, "UNREGISTERED")),
            False,
            True,
        ),
        (
            messaging.SenderIdMismatchError(
                "other", http_response=response(403, "SENDER_ID_MISMATCH")
            ),
            False,
            True,
        ),
        (
            exceptions.InvalidArgumentError("bad", http_response=response(400, "INVALID_ARGUMENT")),
            False,
            False,
        ),
        (exceptions.UnauthenticatedError("auth", http_response=response(401)), False, False),
        (
            messaging.QuotaExceededError(
                "slow down", http_response=response(429, "QUOTA_EXCEEDED", "30")
            ),
            True,
            False,
        ),
        (
            exceptions.UnavailableError("down", http_response=response(503, "UNAVAILABLE", "5")),
            True,
            False,
        ),
        (exceptions.InternalError("oops", http_response=response(500, "INTERNAL")), True, False),
        (exceptions.UnavailableError("connection refused"), True, False),
        (exceptions.DeadlineExceededError("timed out"), True, False),
        (google.auth.exceptions.RefreshError("invalid_grant", retryable=False), False, False),
        (google.auth.exceptions.RefreshError("server", retryable=True), True, False),
        (google.auth.exceptions.TransportError("down"), True, False),
        (ValueError("bad ttl"), False, False),
    ],
)
def test_error_mapping(exc: Exception, retriable: bool, invalid: bool) -> None:
    err = map_error(exc)
    assert err.retriable is retriable
    assert err.invalid_address is invalid
    assert err.provider == "fcm"


def test_error_reason_names_the_fcm_code_and_retry_after_is_honoured() -> None:
    err = map_error(
        messaging.QuotaExceededError("x", http_response=response(429, "QUOTA_EXCEEDED", "30"))
    )
    assert err.reason == "fcm:429 QUOTA_EXCEEDED"
    assert err.retry_after == 30


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


def test_no_answer_is_ambiguous_unless_the_request_never_left() -> None:
    refused = requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(
            None,  # type: ignore[arg-type]
            "/",
            urllib3.exceptions.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
        )
    )
    assert map_error(exceptions.UnavailableError("down", cause=refused)).ambiguous is False
    connect_timeout = requests.exceptions.ConnectTimeout("slow connect")
    assert (
        map_error(exceptions.DeadlineExceededError("t", cause=connect_timeout)).ambiguous is False
    )
    read_timeout = requests.exceptions.ReadTimeout("no answer")
    assert map_error(exceptions.DeadlineExceededError("t", cause=read_timeout)).ambiguous is True
    # With an HTTP answer the runtime infers it from the status.
    answered = exceptions.UnavailableError("down", http_response=response(503))
    assert map_error(answered).ambiguous is None
    token = google.auth.exceptions.RefreshError("invalid_grant", retryable=True)
    assert map_error(token).ambiguous is False
