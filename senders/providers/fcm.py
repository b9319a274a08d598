"""Firebase Cloud Messaging, HTTP v1 API: Android and web push.

firebase-admin's service-account credentials mint the OAuth2 access token (a JWT-bearer
assertion exchanged at the account's `token_uri`), cached until google-auth deems it near
expiry and refreshed on a thread, once for all concurrent sends. firebase-admin also builds
and validates the message JSON. The request itself, `POST /v1/projects/{project}/
messages:send`, goes through herald's HTTP/2 client (`senders.providers._h2`): concurrent
sends are streams on few connections, as many per connection as FCM allows. The SDK's own
asyncio path (`send_each_async` over httpx) cost ~16 ms of CPU per send at 256 in flight.

Errors (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode): UNREGISTERED
(404) and SENDER_ID_MISMATCH reject the token; INVALID_ARGUMENT (400) and auth errors are
permanent; QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL (500) and timeouts are
retried, honouring Retry-After. A stream FCM refused (REFUSED_STREAM, above a GOAWAY's
last-stream-id) was not sent; another reset, a lost connection or a timeout is ambiguous.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import firebase_admin
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import requests
import requests.adapters
from firebase_admin import credentials, messaging

from senders.providers import _h2, _http
from senders.providers.base import (
    DeliveryError,
    Message,
    PermanentError,
    Provider,
    RetriableError,
    SendResult,
    parse_retry_after,
)
from senders.providers.settings import FcmSettings

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_TTL_S = 28 * 24 * 3600  # FCM keeps undelivered messages at most four weeks


class _TrustAdapter(requests.adapters.HTTPAdapter):
    """requests' `verify` swaps the default CA bundle for one file; this adds the file to
    the system's CAs instead, as the httpx clients do."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


def _session(ca_file: Path | None) -> requests.Session | None:
    """The session the OAuth token refresh uses; None: google-auth's default."""
    if not ca_file:
        return None
    session = requests.Session()
    session.mount("https://", _TrustAdapter(_http.ssl_context(ca_file)))
    return session


def _service_account(settings: FcmSettings) -> dict[str, Any]:
    if settings.credentials_json is not None:
        info: dict[str, Any] = json.loads(settings.credentials_json.get_secret_value())
    elif settings.credentials_file is not None:
        info = json.loads(settings.credentials_file.read_text())
    else:
        raise ValueError("fcm: set credentials_file or credentials_json")
    if settings.token_uri:
        info["token_uri"] = settings.token_uri
    elif urlsplit(str(info.get("token_uri", ""))).hostname in _LOCAL_HOSTS:
        # A local token endpoint is the emulator's, which serves FCM on `url` as well.
        info["token_uri"] = f"{settings.url.rstrip('/')}/token"
    return info


def build_message(message: Message, *, now: datetime | None = None) -> messaging.Message:
    """The FCM message for one delivery: notification + data, Android or web push options."""
    data = dict(message.data)
    # The app (and the emulator's ledger) see which delivery this is.
    data["herald_delivery_id"] = message.delivery_id
    data["herald_notification_id"] = message.notification_id
    ttl: int | None = None
    if message.expires_at is not None:
        left = (message.expires_at - (now or datetime.now(UTC))).total_seconds()
        ttl = min(_MAX_TTL_S, max(0, int(left)))
    notification = messaging.Notification(title=message.title, body=message.body or None)
    if message.channel == "push.web":
        headers = {"Urgency": "high" if message.priority == "high" else "normal"}
        if ttl is not None:
            headers["TTL"] = str(ttl)
        if message.collapse_key:
            headers["Topic"] = message.collapse_key[:32]
        return messaging.Message(
            token=message.address,
            data=data,
            webpush=messaging.WebpushConfig(
                headers=headers,
                notification=messaging.WebpushNotification(title=message.title, body=message.body),
            ),
        )
    return messaging.Message(
        token=message.address,
        notification=notification,
        data=data,
        android=messaging.AndroidConfig(
            priority="high" if message.priority == "high" else "normal",
            ttl=ttl,
            collapse_key=message.collapse_key,
        ),
    )


_ADDRESS_GONE = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_TRANSIENT = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})


def answer_error(resp: _h2.Response, provider: str = "fcm") -> DeliveryError:
    """An FCM error answer → retriable or permanent delivery error."""
    status = resp.status
    code = _fcm_code(resp.body)
    reason = f"fcm:{status} {code}"
    if code in _ADDRESS_GONE:
        return PermanentError(reason, provider=provider, status=status, invalid_address=True)
    if status == 429 or status >= 500 or code in _TRANSIENT:
        retry_after = resp.headers.get(b"retry-after")
        return RetriableError(
            reason,
            provider=provider,
            status=status,
            retry_after=parse_retry_after(retry_after.decode() if retry_after else None),
        )
    return PermanentError(reason, provider=provider, status=status)


def map_error(exc: Exception, provider: str = "fcm") -> DeliveryError:
    """A failure without an FCM answer → retriable or permanent delivery error."""
    if isinstance(exc, _h2.StreamError):
        return RetriableError(f"fcm:{exc.reason}", provider=provider, ambiguous=exc.sent)
    # The token exchange comes before the send: FCM cannot have the message.
    if isinstance(exc, google.auth.exceptions.RefreshError):
        # The token endpoint refused the service account (unless it says otherwise).
        cls = RetriableError if exc.retryable else PermanentError
        return cls("fcm:token refresh failed", provider=provider, ambiguous=False)
    if isinstance(exc, google.auth.exceptions.TransportError):
        return RetriableError("fcm:token endpoint unreachable", provider=provider, ambiguous=False)
    if isinstance(exc, ValueError):  # firebase-admin refused to encode the message
        return PermanentError("fcm:invalid message", provider=provider, ambiguous=False)
    return RetriableError(f"fcm:{type(exc).__name__}", provider=provider)


def _fcm_code(body: bytes) -> str:
    """The FCM error code (UNREGISTERED, QUOTA_EXCEEDED...) or else the canonical one."""
    try:
        error = json.loads(body).get("error", {})
        for detail in error.get("details", []):
            if detail.get("@type", "").endswith("google.firebase.fcm.v1.FcmError"):
                return str(detail.get("errorCode"))
        return str(error.get("status", "-"))
    except (ValueError, AttributeError):
        return "-"


class FcmProvider(Provider):
    name = "fcm"
    channels = frozenset({"push.android", "push.web"})

    def __init__(self, settings: FcmSettings) -> None:
        self.settings = settings
        self._client: _h2.H2Client | None = None
        self._credential: google.auth.credentials.Credentials | None = None
        self._refreshing = asyncio.Lock()
        self._token_request: google.auth.transport.requests.Request | None = None
        self._path = ""
        # As firebase-admin sends them; format 2 puts the FCM error code in `details`.
        self._headers = [
            (b"content-type", b"application/json; charset=UTF-8"),
            (b"x-goog-api-format-version", b"2"),
            (b"x-firebase-client", f"fire-admin-python/{firebase_admin.__version__}".encode()),
        ]

    async def start(self) -> None:
        s = self.settings
        info = _service_account(s)
        project = s.project_id or info.get("project_id")
        if not project:
            raise ValueError("fcm: no project_id in the settings or the service account")
        self._credential = credentials.Certificate(info).get_credential()
        self._token_request = google.auth.transport.requests.Request(_session(s.ca_file))
        self._path = f"/v1/projects/{project}/messages:send"
        self._client = _h2.client(s)

    async def _access_token(self) -> str:
        """The cached access token; refreshed on a thread (google-auth is synchronous), once
        for every concurrent send, when google-auth deems it expired or about to."""
        credential = self._credential
        assert credential is not None and self._token_request is not None
        if not credential.valid:
            async with self._refreshing:
                if not credential.valid:
                    await asyncio.to_thread(credential.refresh, self._token_request)
        return str(credential.token)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send(self, message: Message) -> SendResult:
        assert self._client is not None, "start() first"
        if message.channel == "push.web" and message.address.lstrip().startswith("{"):
            raise PermanentError(
                "fcm:web push subscription is not an FCM token", provider=self.name
            )
        try:
            # The SDK's own encoder and checks (private; the contract tests cover it).
            encoded = messaging._MessagingService.encode_message(build_message(message))
            body = json.dumps({"message": encoded}, separators=(",", ":")).encode()
            token = await self._access_token()
            resp = await self._client.request(
                "POST",
                self._path,
                [(b"authorization", f"Bearer {token}".encode()), *self._headers],
                body,
            )
        except (_h2.StreamError, google.auth.exceptions.GoogleAuthError, ValueError) as exc:
            raise map_error(exc, self.name) from exc
        if resp.status != 200:
            raise answer_error(resp, self.name)
        # {"name": "projects/{project}/messages/{id}"}
        try:
            name = str(json.loads(resp.body)["name"])
        except (ValueError, KeyError, TypeError):
            name = ""
        return SendResult(self.name, name.rsplit("/", 1)[-1] or None)
