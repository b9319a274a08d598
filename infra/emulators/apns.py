"""APNs emulator: `POST /3/device/{token}` over HTTP/2, checked the way Apple checks it.

- HTTP/2 only (HTTP/1.1 gets 505);
- `authorization: bearer <JWT>`: ES256, `kid` of a known key, `iss` = its team id, a
  valid signature, `iat` not older than one hour (403 ExpiredProviderToken) nor in the future;
- `apns-topic` allowed for the key, `apns-push-type`, `apns-priority` (10 not allowed for
  background pushes), `apns-id` a UUID, `apns-expiration` an integer, `apns-collapse-id` at
  most 64 bytes, a 64-hex-digit device token, a JSON payload with `aps` of at most 4 KB.

Answers as APNs does: 200 with `apns-id`, or the status with `{"reason": ...}`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.emulators.state import Accepted, EmulatorState

TOKEN_MAX_AGE_S = 3600
MAX_PAYLOAD = 4096
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "location",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)
_DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")
# The reason APNs gives with each status, for faults injected by status.
FAULT_REASONS = {
    400: "BadMessageId",
    403: "InvalidProviderToken",
    404: "BadPath",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


@dataclass(frozen=True)
class SigningKey:
    """A provider key as Apple knows it: its id, team and public half, and allowed topics."""

    key_id: str
    team_id: str
    public_key: EllipticCurvePublicKey
    topics: frozenset[str]


def _reason(status: int, reason: str, **headers: str) -> Response:
    body: dict[str, object] = {"reason": reason}
    if status == 410:
        body["timestamp"] = int(time.time() * 1000)
    return JSONResponse(body, status_code=status, headers=headers)


class TokenVerifier:
    """Checks provider tokens. A token is reused for up to an hour across thousands of
    requests, so its signature is verified once and the result remembered (its age is
    still checked on every request)."""

    MAX_CACHED = 10_000

    def __init__(self, keys: list[SigningKey]) -> None:
        self._keys = {k.key_id: k for k in keys}
        self._verified: dict[str, tuple[SigningKey, float]] = {}  # token → key, iat

    def check(self, authorization: str) -> tuple[SigningKey | None, str | None]:
        """The key that signed the `authorization` header's token, or APNs' 403 reason."""
        if not authorization.lower().startswith("bearer "):
            return None, "MissingProviderToken"
        token = authorization[7:].strip()
        known = self._verified.get(token)
        if known is None:
            try:
                known = self._verify(token)
            except jwt.PyJWTError:
                return None, "InvalidProviderToken"
            if len(self._verified) >= self.MAX_CACHED:
                self._verified.clear()
            self._verified[token] = known
        key, iat = known
        if time.time() - iat > TOKEN_MAX_AGE_S:
            return None, "ExpiredProviderToken"
        return key, None

    def _verify(self, token: str) -> tuple[SigningKey, float]:
        header = jwt.get_unverified_header(token)
        key = self._keys.get(str(header.get("kid")))
        if key is None or header.get("alg") != "ES256":
            raise jwt.InvalidKeyError("unknown key id or algorithm")
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=["ES256"],
            issuer=key.team_id,
            options={"require": ["iss", "iat"]},
            leeway=60,
        )
        return key, float(claims["iat"])


def app(state: EmulatorState, keys: list[SigningKey]) -> Starlette:
    tokens = TokenVerifier(keys)

    async def push(request: Request) -> Response:
        # Read the whole stream first: an answer before the body is consumed leaves hypercorn's
        # HTTP/2 flow control stuck and breaks the connection for the next request.
        raw = await request.body()
        if request.scope.get("http_version") != "2":
            return _reason(505, "HTTP/2 required")
        key, refused = tokens.check(request.headers.get("authorization", ""))
        if refused is not None:
            return _reason(403, refused)
        assert key is not None
        h = request.headers
        device = request.path_params["token"]
        topic = h.get("apns-topic")
        if not topic:
            return _reason(400, "MissingTopic")
        if topic not in key.topics:
            return _reason(400, "TopicDisallowed")
        push_type = h.get("apns-push-type")
        if push_type not in PUSH_TYPES:
            return _reason(400, "InvalidPushType")
        priority = h.get("apns-priority", "10")
        if priority not in ("1", "5", "10") or (push_type == "background" and priority == "10"):
            return _reason(400, "BadPriority")
        apns_id = h.get("apns-id")
        if apns_id is not None:
            try:
                uuid.UUID(apns_id)
            except ValueError:
                return _reason(400, "BadMessageId")
        if not h.get("apns-expiration", "0").isdigit():
            return _reason(400, "BadExpirationDate")
        if len(h.get("apns-collapse-id", "").encode()) > 64:
            return _reason(400, "BadCollapseId")
        if not _DEVICE_TOKEN.match(device):
            return _reason(400, "BadDeviceToken")
        if not raw:
            return _reason(400, "PayloadEmpty")
        if len(raw) > MAX_PAYLOAD:
            return _reason(413, "PayloadTooLarge")
        try:
            payload = json.loads(raw)
            aps = payload["aps"]
            assert isinstance(aps, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            return _reason(400, "PayloadEmpty")

        fault = await state.before("apns", device)
        if fault is not None:
            if fault.mode == "unregistered":
                return _reason(410, "Unregistered")
            if fault.mode == "throttle":
                return _reason(429, "TooManyRequests", **{"retry-after": f"{fault.retry_after:g}"})
            status = fault.status or 503
            return _reason(status, FAULT_REASONS.get(status, "InternalServerError"))

        apns_id = apns_id or str(uuid.uuid4()).upper()
        alert = aps.get("alert")
        title = alert.get("title") if isinstance(alert, dict) else None
        body = alert.get("body") if isinstance(alert, dict) else alert
        state.record(
            Accepted(
                provider="apns",
                channel="push.ios",
                delivery_id=h.get("x-herald-delivery-id") or apns_id,
                address=device,
                title=title,
                body=body,
                message_id=apns_id,
            )
        )
        return Response(
            status_code=200, headers={"apns-id": apns_id, "apns-unique-id": str(uuid.uuid4())}
        )

    return Starlette(routes=[Route("/3/device/{token}", push, methods=["POST"])])
