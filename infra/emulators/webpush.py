"""Web Push service emulator (RFC 8030/8291/8292), served beside FCM as Chrome's is.

- `POST /subscriptions` plays the browser: it creates a subscription (a P-256 key pair and
  an auth secret it keeps) and answers the JSON `PushManager.subscribe()` would return;
  with `{"applicationServerKey": …}` only pushes signed with that VAPID key are accepted.
- `POST /fcm/send/{id}` is the push endpoint: `Authorization: vapid t=<JWT>, k=<key>` with
  an ES256 JWT signed by `k`, `aud` = this origin, `exp` at most 24 h ahead and a `sub`;
  `Content-Encoding: aes128gcm`, a `TTL` header, at most 4096 bytes; the body must decrypt
  with the subscription's keys. Unknown subscriptions get 404, as expired ones do for real.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import struct
import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.emulators.state import Accepted, EmulatorState

MAX_BODY = 4096
_VAPID = re.compile(r"^vapid\s+t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def decrypt(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth: bytes) -> bytes:
    """What the browser does with an RFC 8291 `aes128gcm` push message (one record)."""
    salt, (_, idlen) = body[:16], struct.unpack("!IB", body[16:21])
    as_public, ciphertext = body[21 : 21 + idlen], body[21 + idlen :]
    ua_public = ua_private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public)
    shared = ua_private.exchange(ec.ECDH(), peer)
    ikm = _hkdf(auth, shared, b"WebPush: info\x00" + ua_public + as_public, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    return padded[: padded.rindex(b"\x02")]


@dataclass(frozen=True)
class Subscription:
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    json: str  # exactly what the browser would hand to the web app
    # The app's VAPID public key given at subscribe time: pushes must be signed with it.
    application_server_key: str | None


class PushService:
    def __init__(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}

    def subscribe(self, origin: str, application_server_key: str | None = None) -> str:
        """A new subscription whose endpoint is on `origin`; returns its JSON."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        sid = secrets.token_urlsafe(24)
        p256dh = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        text = json.dumps(
            {
                "endpoint": f"{origin.rstrip('/')}/fcm/send/{sid}",
                "expirationTime": None,
                "keys": {"p256dh": b64url(p256dh), "auth": b64url(auth)},
            },
            separators=(",", ":"),
        )
        self.subscriptions[sid] = Subscription(key, auth, text, application_server_key)
        return text


def _refusal(status: int, reason: str, **headers: str) -> Response:
    return JSONResponse({"reason": reason}, status_code=status, headers=headers)


def check_vapid(authorization: str, origin: str, sub: Subscription) -> tuple[int, str] | None:
    """Why the push service refuses this `Authorization` header (status, reason), or None."""
    match = _VAPID.match(authorization.strip())
    if match is None:
        return 401, "missing VAPID authorization"
    token, key = match.groups()
    if sub.application_server_key is not None and key != sub.application_server_key:
        return 403, "VAPID key differs from the subscription's applicationServerKey"
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
        claims = jwt.decode(
            token,
            public,
            algorithms=["ES256"],
            audience=origin,
            options={"require": ["aud", "exp", "sub"]},
        )
    except (ValueError, jwt.PyJWTError):
        return 403, "VAPID JWT rejected"
    if float(claims["exp"]) - time.time() > 24 * 3600 + 60:
        return 403, "VAPID JWT expires more than 24 h ahead"
    return None


def app(state: EmulatorState, service: PushService) -> Starlette:
    async def subscribe(request: Request) -> Response:
        origin = f"{request.url.scheme}://{request.url.netloc}"
        raw = await request.body()
        key = json.loads(raw).get("applicationServerKey") if raw else None
        return Response(
            service.subscribe(origin, key), media_type="application/json", status_code=201
        )

    async def push(request: Request) -> Response:
        body = await request.body()
        sub = service.subscriptions.get(request.path_params["sid"])
        if sub is None:
            return _refusal(404, "no such subscription")
        origin = f"{request.url.scheme}://{request.url.netloc}"
        refused = check_vapid(request.headers.get("authorization", ""), origin, sub)
        if refused is not None:
            return _refusal(*refused)
        if request.headers.get("content-encoding") != "aes128gcm":
            return _refusal(415, "Content-Encoding must be aes128gcm")
        if "ttl" not in request.headers:
            return _refusal(400, "TTL header required")
        if len(body) > MAX_BODY:
            return _refusal(413, "payload too large")
        try:
            payload = json.loads(decrypt(body, sub.private_key, sub.auth))
        except Exception:  # any failure to decrypt or parse is the sender's fault
            return _refusal(400, "payload does not decrypt with the subscription's keys")

        fault = await state.before("webpush", sub.json)
        if fault is not None:
            if fault.mode == "unregistered":
                return _refusal(410, "subscription expired")
            if fault.mode == "throttle":
                return _refusal(429, "slow down", **{"retry-after": f"{fault.retry_after:g}"})
            return _refusal(fault.status or 503, "injected fault")

        message_id = str(uuid.uuid4())
        state.record(
            Accepted(
                provider="webpush",
                channel="push.web",
                delivery_id=request.headers.get("x-herald-delivery-id")
                or payload.get("delivery_id"),
                address=sub.json,
                title=payload.get("title"),
                body=payload.get("body"),
                message_id=message_id,
            )
        )
        return Response(status_code=201, headers={"location": f"{request.url}/m/{message_id}"})

    return Starlette(
        routes=[
            Route("/subscriptions", subscribe, methods=["POST"]),
            Route("/fcm/send/{sid}", push, methods=["POST"]),
        ]
    )
