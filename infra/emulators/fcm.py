"""FCM HTTP v1 emulator, with the OAuth2 token endpoint its service accounts point at.

- `POST /token`: the JWT-bearer grant (RFC 7523) firebase-admin / google-auth send: an RS256
  assertion signed by a known service account's key (`kid` = its private_key_id), `iss` = its
  client_email, `aud` = this endpoint, a messaging scope, not expired. Answers an access token.
- `POST /v1/projects/{project}/messages:send`: `Authorization: Bearer <access token>` issued
  for that project; a `message` with exactly one target, string-only `data`, a well-formed
  registration token, valid Android priority / TTL.

Errors use the Google API error shape with an `FcmError` detail, as the real API does.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.emulators.state import Accepted, EmulatorState, read_form

SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/firebase.messaging",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
ACCESS_TOKEN_TTL_S = 3600
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,}:[A-Za-z0-9_-]{32,}$")
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")
_STATUS = {
    400: ("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    401: ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
    403: ("PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
    404: ("NOT_FOUND", "UNREGISTERED"),
    429: ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
    500: ("INTERNAL", "INTERNAL"),
    503: ("UNAVAILABLE", "UNAVAILABLE"),
}


@dataclass(frozen=True)
class ServiceAccount:
    project_id: str
    client_email: str
    key_id: str
    public_key: RSAPublicKey


def fcm_error(
    status: int, message: str, *, fcm_code: str | None = None, **headers: str
) -> Response:
    canonical, default_code = _STATUS.get(status, ("UNKNOWN", "UNSPECIFIED_ERROR"))
    return JSONResponse(
        {
            "error": {
                "code": status,
                "message": message,
                "status": canonical,
                "details": [
                    {
                        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                        "errorCode": fcm_code or default_code,
                    }
                ],
            }
        },
        status_code=status,
        headers=headers,
    )


def _shape_error(message: dict[str, Any]) -> str | None:
    """What is wrong with a v1 `message` (as FCM would say it), or None."""
    targets = [k for k in ("token", "topic", "condition") if message.get(k)]
    if len(targets) != 1:
        return "exactly one of token, topic or condition is required"
    if "token" in message and not _FCM_TOKEN.match(str(message["token"])):
        return "The registration token is not a valid FCM registration token"
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "data must be a map of strings"
    android = message.get("android") or {}
    if str(android.get("priority", "normal")).lower() not in ("normal", "high"):
        return "Invalid value at 'message.android.priority'"
    if "ttl" in android and not _TTL.match(str(android["ttl"])):
        return "Invalid value at 'message.android.ttl'"
    if not (message.get("notification") or data or message.get("webpush") or android):
        return "message has no content"
    return None


class TokenIssuer:
    """The OAuth2 token endpoint's side: grants access tokens, tells whose a token is."""

    def __init__(self, accounts: list[ServiceAccount]) -> None:
        self._by_key = {a.key_id: a for a in accounts}
        self._access: dict[str, tuple[str, float]] = {}  # token → (project, expires at)

    def grant(
        self, form: dict[str, str], path: str, port: int | None
    ) -> tuple[int, dict[str, Any]]:
        """Answer (status, JSON body) to a token request posted to `path` on `port`."""
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type"}
        assertion = str(form.get("assertion", ""))
        try:
            account = self._by_key.get(str(jwt.get_unverified_header(assertion).get("kid")))
            if account is None:
                raise jwt.InvalidSignatureError("unknown key")
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                # google-auth always signs for Google's endpoint, whatever the token_uri.
                options={"require": ["iss", "aud", "iat", "exp"], "verify_aud": False},
                issuer=account.client_email,
                leeway=60,
            )
            aud = urlsplit(str(claims["aud"]))
            if claims["aud"] != GOOGLE_TOKEN_AUDIENCE and (aud.path, aud.port) != (path, port):
                raise jwt.InvalidAudienceError(f"audience {claims['aud']} is not this endpoint")
        except jwt.PyJWTError as exc:
            return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}
        if not SCOPES & set(str(claims.get("scope", "")).split()):
            return 400, {"error": "invalid_scope"}
        access = f"ya29.emulator-{secrets.token_urlsafe(24)}"
        self._access[access] = (account.project_id, time.time() + ACCESS_TOKEN_TTL_S)
        return 200, {
            "access_token": access,
            "expires_in": ACCESS_TOKEN_TTL_S,
            "token_type": "Bearer",
        }

    def project(self, authorization: str) -> str | None:
        """The project a valid, unexpired `Bearer` access token was granted for."""
        if not authorization.lower().startswith("bearer "):
            return None
        granted = self._access.get(authorization[7:])
        if granted is None or granted[1] < time.time():
            return None
        return granted[0]


def app(state: EmulatorState, accounts: list[ServiceAccount]) -> Starlette:
    issuer = TokenIssuer(accounts)

    async def token(request: Request) -> Response:
        status, answer = issuer.grant(await read_form(request), request.url.path, request.url.port)
        return JSONResponse(answer, status_code=status)

    async def send(request: Request) -> Response:
        await request.body()  # consumed before any answer, so the connection stays usable
        project = request.path_params["project"]
        granted = issuer.project(request.headers.get("authorization", ""))
        if granted is None:
            return fcm_error(401, "Request had invalid authentication credentials.")
        if granted != project:
            return fcm_error(
                403, "Permission denied for this project.", fcm_code="SENDER_ID_MISMATCH"
            )
        try:
            body = await request.json()
            message = body["message"]
            assert isinstance(message, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            return fcm_error(400, "Invalid JSON payload received.")
        problem = _shape_error(message)
        if problem is not None:
            return fcm_error(400, problem)
        address = str(message.get("token") or message.get("topic") or message.get("condition"))

        fault = await state.before("fcm", address)
        if fault is not None:
            if fault.mode == "unregistered":
                return fcm_error(404, "Requested entity was not found.")
            if fault.mode == "throttle":
                return fcm_error(
                    429, "Quota exceeded.", **{"retry-after": f"{fault.retry_after:g}"}
                )
            status = fault.status or 503
            return fcm_error(status, "Injected fault.")

        data = message.get("data") or {}
        webpush = message.get("webpush")
        notification = (webpush or {}).get("notification") or message.get("notification") or {}
        message_id = f"0:{int(time.time() * 1000)}%{uuid.uuid4().hex[:16]}"
        state.record(
            Accepted(
                provider="fcm",
                channel="push.web" if webpush else "push.android",
                delivery_id=request.headers.get("x-herald-delivery-id")
                or data.get("herald_delivery_id"),
                address=address,
                title=notification.get("title"),
                body=notification.get("body"),
                message_id=message_id,
            )
        )
        return JSONResponse({"name": f"projects/{project}/messages/{message_id}"})

    return Starlette(
        routes=[
            Route("/token", token, methods=["POST"]),
            Route("/v1/projects/{project}/messages:send", send, methods=["POST"]),
        ]
    )
