"""Firebase Cloud Messaging, HTTP v1 API, through firebase-admin: Android and web push.

firebase-admin authenticates with a service account (an OAuth2 JWT-bearer assertion
exchanged at the account's `token_uri`, the access token cached until it expires) and
posts to `/v1/projects/{project}/messages:send`. Sends go through the SDK's asyncio path
(`send_each_async`: httpx, HTTP/2 against the real endpoint), so concurrent sends are
streams on few connections, not one thread each.

firebase-admin has no setting for the FCM endpoint; the provider points the app's
messaging service at `url` (a private attribute, pinned by the contract tests) so the
emulator can stand in. It also gives the SDK an async client that never retries: the SDK
would otherwise sleep through 500/503 itself, while retries are the sender runtime's job.

Errors (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode): UNREGISTERED
(404) and SENDER_ID_MISMATCH reject the token; INVALID_ARGUMENT (400) and auth errors are
permanent; QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL (500) and timeouts are
retried, honouring Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import firebase_admin
import google.auth.exceptions
import google.auth.transport.requests
import httpx
import requests
import requests.adapters
import requests.exceptions
import urllib3.exceptions
from firebase_admin import _http_client, _retry, credentials, exceptions, messaging

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


def map_error(exc: Exception, provider: str = "fcm") -> DeliveryError:
    """firebase-admin / google-auth exception → retriable or permanent delivery error."""
    if isinstance(exc, exceptions.FirebaseError):
        resp = exc.http_response
        status = resp.status_code if resp is not None else None
        retry_after = (
            parse_retry_after(resp.headers.get("Retry-After")) if resp is not None else None
        )
        code = _fcm_code(exc)
        reason = f"fcm:{status or '-'} {code}"
        if isinstance(exc, messaging.UnregisteredError | messaging.SenderIdMismatchError):
            return PermanentError(reason, provider=provider, status=status, invalid_address=True)
        if isinstance(
            exc,
            messaging.QuotaExceededError
            | exceptions.UnavailableError
            | exceptions.InternalError
            | exceptions.DeadlineExceededError
            | exceptions.UnknownError,
        ) or (status is not None and status >= 500):
            return RetriableError(
                reason,
                provider=provider,
                status=status,
                retry_after=retry_after,
                ambiguous=None if resp is not None else not _not_sent(exc),
            )
        return PermanentError(reason, provider=provider, status=status)
    # The token exchange comes before the send: FCM cannot have the message.
    if isinstance(exc, google.auth.exceptions.RefreshError):
        # The token endpoint refused the service account (unless it says otherwise).
        cls = RetriableError if exc.retryable else PermanentError
        return cls("fcm:token refresh failed", provider=provider, ambiguous=False)
    if isinstance(exc, google.auth.exceptions.TransportError):
        return RetriableError("fcm:token endpoint unreachable", provider=provider, ambiguous=False)
    if isinstance(exc, ValueError):
        return PermanentError("fcm:invalid message", provider=provider)
    return RetriableError(f"fcm:{type(exc).__name__}", provider=provider)


def _not_sent(exc: exceptions.FirebaseError) -> bool:
    """The SDK failed before the request left: connect refused or connect timeout."""
    cause = exc.cause
    if isinstance(
        cause, requests.exceptions.ConnectTimeout | httpx.ConnectError | httpx.ConnectTimeout
    ):
        return True

    if isinstance(cause, requests.exceptions.ConnectionError):
        reason = cause.args[0] if cause.args else None
        return isinstance(getattr(reason, "reason", reason), urllib3.exceptions.NewConnectionError)
    return False


def _fcm_code(exc: exceptions.FirebaseError) -> str:
    """The FCM error code (UNREGISTERED, QUOTA_EXCEEDED...) or else the canonical one."""
    resp = exc.http_response
    if resp is not None:
        try:
            error = resp.json().get("error", {})
            for detail in error.get("details", []):
                if detail.get("@type", "").endswith("google.firebase.fcm.v1.FcmError"):
                    return str(detail.get("errorCode"))
            return str(error.get("status", exc.code))
        except (ValueError, AttributeError):
            pass
    return str(exc.code)


class FcmProvider(Provider):
    name = "fcm"
    channels = frozenset({"push.android", "push.web"})

    def __init__(self, settings: FcmSettings) -> None:
        self.settings = settings
        self._app: firebase_admin.App | None = None
        self._service: Any = None
        self._refreshing = asyncio.Lock()
        self._token_request: google.auth.transport.requests.Request | None = None

    async def start(self) -> None:
        s = self.settings
        info = _service_account(s)
        project = s.project_id or info.get("project_id")
        if not project:
            raise ValueError("fcm: no project_id in the settings or the service account")
        self._app = firebase_admin.initialize_app(
            credentials.Certificate(info),
            options={"projectId": project, "httpTimeout": s.timeout_s},
            name=f"herald-fcm-{uuid.uuid4().hex}",
        )
        service = messaging._get_messaging_service(self._app)
        service._fcm_url = f"{s.url.rstrip('/')}/v1/projects/{project}/messages:send"
        service._async_client = _http_client.HttpxAsyncClient(
            credential=service._credential,
            timeout=s.timeout_s,
            retry_config=_retry.HttpxRetry(max_retries=0),
        )
        if s.ca_file:
            # firebase-admin builds its transports without a `verify` option: replace them
            # (private attributes, like the URL above; the contract tests cover them).
            context = _http.ssl_context(s.ca_file)
            for mount in service._async_client._mounts.values():
                mount._wrapped_transport = httpx.AsyncHTTPTransport(
                    retries=0, http2=True, verify=context
                )
        self._token_request = google.auth.transport.requests.Request(_session(s.ca_file))
        self._service = service

    async def _fresh_token(self) -> None:
        """The SDK's async client refreshes an expired access token synchronously, on the
        event loop; do it on a thread instead, once for every concurrent send."""
        credential = self._service._credential
        if credential.valid:
            return
        async with self._refreshing:
            if not credential.valid:
                await asyncio.to_thread(credential.refresh, self._token_request)

    async def close(self) -> None:
        if self._app is not None:
            await self._service._async_client.aclose()
            # delete_app would close the async client again with asyncio.run(): not on our
            # loop, so it runs on a thread of its own.
            await asyncio.to_thread(firebase_admin.delete_app, self._app)
            self._app = None

    async def send(self, message: Message) -> SendResult:
        assert self._service is not None, "start() first"
        if message.channel == "push.web" and message.address.lstrip().startswith("{"):
            raise PermanentError(
                "fcm:web push subscription is not an FCM token", provider=self.name
            )
        try:
            fcm_message = build_message(message)
            await self._fresh_token()
            batch = await self._service.send_each_async([fcm_message], dry_run=False)
        except Exception as exc:
            raise map_error(exc, self.name) from exc
        (response,) = batch.responses
        if not response.success:
            raise map_error(response.exception, self.name) from response.exception
        # "projects/{project}/messages/{id}"
        return SendResult(self.name, str(response.message_id).rsplit("/", 1)[-1])
