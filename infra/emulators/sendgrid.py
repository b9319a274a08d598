"""SendGrid v3 Mail Send emulator.

`POST /v3/mail/send` with `Authorization: Bearer <api key>` (401 otherwise) and the v3
JSON body: `personalizations[].to[].email` valid addresses, `from.email`, a `subject`
(top level or per personalization) and `content` (text/plain first). Answers 202 with
`X-Message-Id`, or 400 with SendGrid's `errors` list naming the field.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.emulators.state import Accepted, EmulatorState

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def sendgrid_error(status: int, message: str, field: str | None = None, **headers: str) -> Response:
    return JSONResponse(
        {"errors": [{"message": message, "field": field, "help": None}]},
        status_code=status,
        headers=headers,
    )


def _shape_error(body: dict[str, Any]) -> tuple[str, str] | None:
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return "personalizations", "The personalizations field is required."
    for i, p in enumerate(personalizations):
        to = p.get("to") if isinstance(p, dict) else None
        if not isinstance(to, list) or not to:
            return f"personalizations.{i}.to", "The to array is required."
        for j, r in enumerate(to):
            if not isinstance(r, dict) or not _EMAIL.match(str(r.get("email", ""))):
                return f"personalizations.{i}.to.{j}.email", "Does not contain a valid address."
    if not _EMAIL.match(str((body.get("from") or {}).get("email", ""))):
        return "from.email", "The from email does not contain a valid address."
    if not body.get("subject") and not all(p.get("subject") for p in personalizations):
        return "subject", "The subject is required."
    content = body.get("content")
    if not isinstance(content, list) or not content or not all(c.get("value") for c in content):
        return "content", "The content value must be a string at least one character in length."
    if content[0].get("type") != "text/plain" and any(
        c.get("type") == "text/plain" for c in content
    ):
        return "content.0.type", "The text/plain content type must be first."
    return None


def app(state: EmulatorState, api_keys: set[str]) -> Starlette:
    async def mail_send(request: Request) -> Response:
        await request.body()  # consumed before any answer, so the connection stays usable
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in api_keys:
            return sendgrid_error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        try:
            body = await request.json()
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            return sendgrid_error(400, "Bad Request")
        problem = _shape_error(body)
        if problem is not None:
            return sendgrid_error(400, problem[1], problem[0])
        personalization = body["personalizations"][0]
        address = str(personalization["to"][0]["email"])

        fault = await state.before("sendgrid", address)
        if fault is not None:
            if fault.mode == "unregistered":
                return sendgrid_error(
                    400, "Does not contain a valid address.", "personalizations.0.to.0.email"
                )
            if fault.mode == "throttle":
                reset = int(time.time() + fault.retry_after)
                return sendgrid_error(
                    429,
                    "too many requests",
                    **{"retry-after": f"{fault.retry_after:g}", "x-ratelimit-reset": str(reset)},
                )
            return sendgrid_error(fault.status or 500, "Injected fault")

        text = next((c["value"] for c in body["content"] if c.get("type") == "text/plain"), None)
        custom = {**(body.get("custom_args") or {}), **(personalization.get("custom_args") or {})}
        message_id = secrets.token_urlsafe(16)
        state.record(
            Accepted(
                provider="sendgrid",
                channel="email",
                delivery_id=request.headers.get("x-herald-delivery-id")
                or custom.get("delivery_id")
                or (body.get("headers") or {}).get("X-Herald-Delivery-Id"),
                address=address,
                subject=personalization.get("subject") or body.get("subject"),
                body=text,
                message_id=message_id,
            )
        )
        return Response(status_code=202, headers={"x-message-id": message_id})

    return Starlette(routes=[Route("/v3/mail/send", mail_send, methods=["POST"])])
