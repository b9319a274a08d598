"""Apple Push Notification service: HTTP/2, token-based (ES256 JWT) authentication.

Concurrent sends are streams multiplexed over a few long-lived HTTP/2 connections, as Apple
asks (`senders.providers._h2`): as many per connection as APNs' SETTINGS_MAX_CONCURRENT_STREAMS
allows at the time, a new connection only when those are full. A stream APNs refused
(REFUSED_STREAM, or above a GOAWAY's last-stream-id) is certainly not sent; a reset, a lost
connection or a timeout is ambiguous. One JWT is signed and reused by every request
until `token_refresh_s` (Apple: refresh at most every 20 min, rejected after 60 min), or
until APNs answers 403 ExpiredProviderToken.

Errors (https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns):
400 BadDeviceToken / DeviceTokenNotForTopic and 410 Unregistered reject the address; other
400s, 403 auth errors, 404, 405 and 413 are permanent; 403 ExpiredProviderToken refreshes
the token and is retried; 429 and 5xx are retried, honouring Retry-After.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jwt

from senders.providers import _h2
from senders.providers.base import (
    DeliveryError,
    Message,
    PermanentError,
    Provider,
    RetriableError,
    SendResult,
    parse_retry_after,
)
from senders.providers.settings import ApnsSettings

# 400 reasons that say the token itself is bad for this app: never try it again.
_BAD_ADDRESS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})
# Reserved for the payload; custom data lives beside "aps".
_RESERVED_KEYS = frozenset({"aps"})


class ProviderToken:
    """The ES256 JWT APNs wants as bearer: reused until it is `max_age_s` old."""

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        private_key: str,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._team_id = team_id
        self._key_id = key_id
        self._key = private_key
        self._max_age_s = max_age_s
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0

    def get(self) -> str:
        if self._token is None or self._clock() - self._issued_at >= self._max_age_s:
            self._sign()
        assert self._token is not None
        return self._token

    def expire(self, token: str) -> None:
        """APNs said `token` expired: sign a new one, unless a concurrent send already did."""
        if token == self._token:
            self._sign()

    def _sign(self) -> None:
        now = self._clock()
        self._token = jwt.encode(
            {"iss": self._team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self._key_id},
        )
        self._issued_at = now


def build_request(message: Message, topic: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The APNs headers (without authorization) and JSON payload for one message."""
    background = not message.body and not message.title
    headers = {
        "apns-topic": topic,
        "apns-push-type": "background" if background else "alert",
        # Background pushes must be 5; "low" asks for power-considerate delivery.
        "apns-priority": "5" if background or message.priority == "low" else "10",
        "apns-id": message.delivery_id,
        "x-herald-delivery-id": message.delivery_id,
    }
    if message.expires_at is not None:
        headers["apns-expiration"] = str(int(message.expires_at.timestamp()))
    if message.collapse_key:
        headers["apns-collapse-id"] = message.collapse_key[:64]
    aps: dict[str, Any]
    if background:
        aps = {"content-available": 1}
    else:
        alert: dict[str, str] = {"body": message.body}
        if message.title:
            alert["title"] = message.title
        aps = {"alert": alert, "sound": "default"}
    payload: dict[str, Any] = {k: v for k, v in message.data.items() if k not in _RESERVED_KEYS}
    payload["aps"] = aps
    payload["herald"] = {"notification_id": message.notification_id}
    return headers, payload


class ApnsProvider(Provider):
    name = "apns"
    channels = frozenset({"push.ios"})

    def __init__(self, settings: ApnsSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._client: _h2.H2Client | None = None
        self._token: ProviderToken | None = None

    async def start(self) -> None:
        s = self.settings
        if s.private_key is not None:
            key = s.private_key.get_secret_value()
        elif s.key_file is not None:
            key = s.key_file.read_text()
        else:
            raise ValueError("apns: set key_file or private_key")
        self._token = ProviderToken(
            team_id=s.team_id,
            key_id=s.key_id,
            private_key=key,
            max_age_s=s.token_refresh_s,
            clock=self._clock,
        )
        self._token.get()  # a bad key fails the start, not the first send
        self._client = _h2.client(s)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send(self, message: Message) -> SendResult:
        assert self._client is not None and self._token is not None, "start() first"
        headers, payload = build_request(message, self.settings.topic)
        token = self._token.get()
        headers["authorization"] = f"bearer {token}"
        try:
            resp = await self._client.request(
                "POST",
                f"/3/device/{message.address}",
                [(k.encode(), v.encode()) for k, v in headers.items()],
                json.dumps(payload, separators=(",", ":")).encode(),
            )
        except (ValueError, UnicodeEncodeError) as exc:  # a line break in a header
            raise PermanentError(
                "apns:unsendable request", provider=self.name, ambiguous=False
            ) from exc
        except _h2.StreamError as exc:
            raise RetriableError(
                f"apns:{exc.reason}", provider=self.name, ambiguous=exc.sent
            ) from exc
        if resp.status == 200:
            apns_id = resp.headers.get(b"apns-id")
            return SendResult(self.name, apns_id.decode() if apns_id else message.delivery_id)
        raise self._error(resp, token)

    def _error(self, resp: _h2.Response, token: str) -> DeliveryError:
        status = resp.status
        try:
            reason = str(json.loads(resp.body).get("reason", ""))
        except (ValueError, AttributeError):
            reason = ""
        text = f"apns:{status} {reason}".strip()
        if status == 403 and reason == "ExpiredProviderToken":
            assert self._token is not None
            self._token.expire(token)
            return RetriableError(text, provider=self.name, status=status, retry_after=0.0)
        if status == 410 or (status == 400 and reason in _BAD_ADDRESS):
            return PermanentError(text, provider=self.name, status=status, invalid_address=True)
        if status == 429 or status >= 500:
            retry_after = resp.headers.get(b"retry-after")
            return RetriableError(
                text,
                provider=self.name,
                status=status,
                retry_after=parse_retry_after(retry_after.decode() if retry_after else None),
            )
        return PermanentError(text, provider=self.name, status=status)
