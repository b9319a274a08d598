"""Web Push (RFC 8030) to a browser's push service, for Web Push subscriptions (push.web).

The address is the subscription JSON a browser's `PushManager.subscribe()` returns:
`{"endpoint": "https://…", "keys": {"p256dh": …, "auth": …}}`. The payload (title, body,
ids) is encrypted for that browser (RFC 8291, `aes128gcm`) and the request is signed with
the application server's VAPID key (RFC 8292, ES256 JWT, `Authorization: vapid t=…, k=…`).
The push service answers 201 and a `Location` naming the message.

`endpoint_override` replaces the endpoint's origin (scheme, host, port) so that every
subscription goes to the emulator; empty for the real push services.

Errors: 404 and 410 say the subscription is gone (rejected address); 400, 401/403 (VAPID
refused) and 413 are permanent; 429 and 5xx are retried, honouring Retry-After.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from senders.providers import _http
from senders.providers.base import Message, PermanentError, Provider, SendResult
from senders.providers.settings import WebpushSettings

RECORD_SIZE = 4096
# The push service keeps undelivered messages at most this long (and may keep less).
MAX_TTL_S = 28 * 24 * 3600
VAPID_TTL_S = 12 * 3600  # RFC 8292: at most 24 h


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def encrypt(
    plaintext: bytes,
    p256dh: bytes,
    auth: bytes,
    *,
    salt: bytes | None = None,
    as_private: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """RFC 8291 message encryption: an `aes128gcm` body (RFC 8188) with a single record.

    `salt` and the ephemeral `as_private` key are fresh per message unless given (tests)."""
    ua_public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    as_private = as_private or ec.generate_private_key(ec.SECP256R1())
    as_public = as_private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = as_private.exchange(ec.ECDH(), ua_public)
    ikm = _hkdf(auth, shared, b"WebPush: info\x00" + p256dh + as_public, 32)
    salt = salt or os.urandom(16)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    # 0x02: padding delimiter of the last (and only) record.
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    header = salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public
    return header + ciphertext


class VapidSigner:
    """One VAPID JWT per push-service origin, reused until it is half-way to expiry."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        subject: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = private_key
        self._subject = subject
        self._clock = clock
        self.public_key = b64url(
            private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )
        self._tokens: dict[str, tuple[str, float]] = {}  # audience → (jwt, expires at)

    def header(self, audience: str) -> str:
        now = self._clock()
        token, expires = self._tokens.get(audience, ("", 0.0))
        if expires - now < VAPID_TTL_S / 2:
            expires = now + VAPID_TTL_S
            token = jwt.encode(
                {"aud": audience, "exp": int(expires), "sub": self._subject},
                self._key,
                algorithm="ES256",
            )
            self._tokens[audience] = (token, expires)
        return f"vapid t={token}, k={self.public_key}"


def parse_subscription(address: str) -> tuple[str, bytes, bytes]:
    """(endpoint, p256dh, auth) of a subscription JSON; PermanentError if it is not one."""
    if not address.lstrip().startswith("{"):
        # Most likely an FCM registration token routed here: the device itself is fine.
        raise PermanentError("webpush:address is not a Web Push subscription", provider="webpush")
    try:
        sub: dict[str, Any] = json.loads(address)
        keys = sub["keys"]
        endpoint = str(sub["endpoint"])
        p256dh, auth = b64url_decode(keys["p256dh"]), b64url_decode(keys["auth"])
    except (ValueError, KeyError, TypeError):
        raise PermanentError(
            "webpush:not a Web Push subscription", provider="webpush", invalid_address=True
        ) from None
    if len(p256dh) != 65 or len(auth) != 16:
        raise PermanentError(
            "webpush:malformed subscription keys", provider="webpush", invalid_address=True
        )
    return endpoint, p256dh, auth


class WebpushProvider(Provider):
    name = "webpush"
    channels = frozenset({"push.web"})

    def __init__(self, settings: WebpushSettings) -> None:
        self.settings = settings
        self.concurrency = settings.max_connections
        self._client: _http.Client | None = None
        self._vapid: VapidSigner | None = None

    async def start(self) -> None:
        s = self.settings
        if s.vapid_private_key is not None:
            pem = s.vapid_private_key.get_secret_value().encode()
        elif s.vapid_key_file is not None:
            pem = s.vapid_key_file.read_bytes()
        else:
            raise ValueError("webpush: set vapid_key_file or vapid_private_key")
        key = load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("webpush: the VAPID key must be an EC P-256 key")
        self._vapid = VapidSigner(key, s.subject)
        self._client = _http.client(
            s.endpoint_override or "",
            timeout_s=s.timeout_s,
            max_connections=s.max_connections,
            ca_file=s.ca_file,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _target(self, endpoint: str) -> tuple[str, str]:
        """(URL to post to, VAPID audience = that URL's origin)."""
        parts = urlsplit(endpoint)
        if self.settings.endpoint_override:
            base = urlsplit(self.settings.endpoint_override)
            parts = parts._replace(scheme=base.scheme, netloc=base.netloc)
        return parts.geturl(), f"{parts.scheme}://{parts.netloc}"

    async def send(self, message: Message) -> SendResult:
        assert self._client is not None and self._vapid is not None, "start() first"
        endpoint, p256dh, auth = parse_subscription(message.address)
        url, audience = self._target(endpoint)
        payload = {
            "title": message.title,
            "body": message.body,
            "data": message.data,
            "delivery_id": message.delivery_id,
            "notification_id": message.notification_id,
        }
        ttl = MAX_TTL_S
        if message.expires_at is not None:
            ttl = min(MAX_TTL_S, max(0, int(message.expires_at.timestamp() - time.time())))
        headers = {
            "Authorization": self._vapid.header(audience),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(ttl),
            "Urgency": {"high": "high", "low": "low"}.get(message.priority, "normal"),
            "X-Herald-Delivery-Id": message.delivery_id,
        }
        if message.collapse_key:
            headers["Topic"] = b64url(message.collapse_key.encode())[:32]
        body = encrypt(json.dumps(payload, separators=(",", ":")).encode(), p256dh, auth)
        resp = await _http.post(self._client, self.name, url, content=body, headers=headers)
        if resp.status_code in (200, 201, 202):
            return SendResult(self.name, resp.headers.get("location"))
        raise _http.status_error(self.name, resp, invalid_address=resp.status_code in (404, 410))
