"""Apple Push Notification service: HTTP/2, token-based (ES256 JWT) authentication.

One `httpx.AsyncClient` with HTTP/2 only, so concurrent sends are streams multiplexed over a
few long-lived connections, as Apple asks. One JWT is signed and reused by every request
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

import httpx
import jwt

from senders.providers import _http
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
        self._client: httpx.AsyncClient | None = None
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
        self._client = httpx.AsyncClient(
            base_url=s.url.rstrip("/"),
            http1=False,
            http2=True,
            verify=_http.ssl_context(s.ca_file),
            timeout=s.timeout_s,
            limits=httpx.Limits(max_connections=s.max_connections),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send(self, message: Message) -> SendResult:
        assert self._client is not None and self._token is not None, "start() first"
        headers, payload = build_request(message, self.settings.topic)
        token = self._token.get()
        headers["authorization"] = f"bearer {token}"
        resp = await _http.post(
            self._client,
            self.name,
            f"/3/device/{message.address}",
            headers=headers,
            content=json.dumps(payload, separators=(",", ":")).encode(),
        )
        if resp.status_code == 200:
            return SendResult(self.name, resp.headers.get("apns-id", message.delivery_id))
        raise self._error(resp, token)

    def _error(self, resp: httpx.Response, token: str) -> DeliveryError:
        status = resp.status_code
        try:
            reason = str(resp.json().get("reason", ""))
        except ValueError:
            reason = ""
        text = f"apns:{status} {reason}".strip()
        if status == 403 and reason == "ExpiredProviderToken":
            assert self._token is not None
            self._token.expire(token)
            return RetriableError(text, provider=self.name, status=status, retry_after=0.0)
        if status == 410 or (status == 400 and reason in _BAD_ADDRESS):
            return PermanentError(text, provider=self.name, status=status, invalid_address=True)
        if status == 429 or status >= 500:
            return RetriableError(
                text,
                provider=self.name,
                status=status,
                retry_after=parse_retry_after(resp.headers.get("retry-after")),
            )
        return PermanentError(text, provider=self.name, status=status)
