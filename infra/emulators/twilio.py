"""Twilio-compatible Messages API emulator.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`: HTTP basic auth with the account
SID and auth token (401, code 20003, otherwise), form fields `To` (E.164, else 400 code
21211), `From` or `MessagingServiceSid` (21603/21606) and `Body` (21602, at most 1600
characters: 21617). Answers 201 with the message resource, or Twilio's error shape.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from email.utils import formatdate

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.emulators.state import Accepted, EmulatorState, read_form

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
FAULT_CODES = {400: 21211, 401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}


def twilio_error(status: int, code: int, message: str, **headers: str) -> Response:
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
        headers=headers,
    )


def _basic_auth(request: Request) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def app(state: EmulatorState, accounts: dict[str, str]) -> Starlette:
    """`accounts`: account SID → auth token."""

    async def create_message(request: Request) -> Response:
        await request.body()  # consumed before any answer, so the connection stays usable
        sid = request.path_params["sid"]
        creds = _basic_auth(request)
        if creds is None or creds[0] != sid or accounts.get(sid) != creds[1]:
            return twilio_error(401, 20003, "Authenticate")
        form = await read_form(request)
        to, body = str(form.get("To", "")), str(form.get("Body", ""))
        sender = form.get("From") or form.get("MessagingServiceSid")
        if not to or not _E164.match(to):
            return twilio_error(400, 21211, "The 'To' number is not a valid phone number.")
        if not sender:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(
                400, 21617, "The concatenated message body exceeds 1600 characters."
            )

        fault = await state.before("twilio", to)
        if fault is not None:
            if fault.mode == "unregistered":
                return twilio_error(400, 21614, "'To' number is not a valid mobile number")
            if fault.mode == "throttle":
                return twilio_error(
                    429, 20429, "Too Many Requests", **{"retry-after": f"{fault.retry_after:g}"}
                )
            status = fault.status or 500
            return twilio_error(status, FAULT_CODES.get(status, 20500), "Injected fault")

        message_sid = "SM" + secrets.token_hex(16)
        state.record(
            Accepted(
                provider="twilio",
                channel="sms",
                delivery_id=request.headers.get("x-herald-delivery-id"),
                address=to,
                body=body,
                message_id=message_sid,
            )
        )
        return JSONResponse(
            {
                "sid": message_sid,
                "account_sid": sid,
                "to": to,
                "from": str(form.get("From", "")) or None,
                "messaging_service_sid": str(form.get("MessagingServiceSid", "")) or None,
                "body": body,
                "status": "queued",
                "num_segments": str(1 + (len(body) - 1) // 153 if len(body) > 160 else 1),
                "direction": "outbound-api",
                "date_created": formatdate(usegmt=True),
                "uri": f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json",
            },
            status_code=201,
        )

    return Starlette(
        routes=[Route("/2010-04-01/Accounts/{sid}/Messages.json", create_message, methods=["POST"])]
    )
