"""Vonage (Nexmo) SMS API emulator.

`POST /sms/json` with form (or JSON) fields `api_key`, `api_secret`, `from`, `to` (digits,
international format without "+"), `text`. Like Vonage, it answers HTTP 200 with a per
message `status` ("0" accepted; "2" missing parameter, "3" invalid parameter, "4" bad
credentials, "5" internal error, "6" unroutable number), except for throttling faults,
which get HTTP 429 with Retry-After as the API gateway sends.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.emulators.state import Accepted, EmulatorState, read_form

_MSISDN = re.compile(r"^[1-9]\d{6,14}$")
FAULT_STATUS = {400: "3", 401: "4", 500: "5"}


def _answer(to: str, status: str, error_text: str | None = None, **extra: str) -> Response:
    entry: dict[str, Any] = {"to": to, "status": status, **extra}
    if error_text:
        entry["error-text"] = error_text
    return JSONResponse({"message-count": "1", "messages": [entry]})


def app(state: EmulatorState, keys: dict[str, str]) -> Starlette:
    """`keys`: api key → api secret."""

    async def send(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            fields: dict[str, Any] = await request.json()
        else:
            fields = dict(await read_form(request))
        to, text = str(fields.get("to", "")), str(fields.get("text", ""))
        if not fields.get("api_key") or not fields.get("api_secret"):
            return _answer(to, "2", "Missing api_key or api_secret")
        if keys.get(str(fields["api_key"])) != str(fields["api_secret"]):
            return _answer(to, "4", "Bad Credentials")
        if not fields.get("from") or not to or not text:
            return _answer(to, "2", "Missing from, to or text")
        if not _MSISDN.match(to):
            return _answer(to, "3", "Invalid to address")

        fault = await state.before("vonage", f"+{to}")
        if fault is not None:
            if fault.mode == "unregistered":
                return _answer(to, "6", "Unroutable message - rejected")
            if fault.mode == "throttle":
                return JSONResponse(
                    {
                        "type": "https://developer.nexmo.com/api-errors#throttled",
                        "title": "Too Many Requests",
                    },
                    status_code=429,
                    headers={"retry-after": f"{fault.retry_after:g}"},
                )
            status = fault.status or 500
            if status in FAULT_STATUS:
                return _answer(to, FAULT_STATUS[status], "Injected fault")
            return JSONResponse({"title": "Injected fault"}, status_code=status)

        message_id = secrets.token_hex(8).upper()
        state.record(
            Accepted(
                provider="vonage",
                channel="sms",
                delivery_id=request.headers.get("x-herald-delivery-id") or fields.get("client-ref"),
                address=f"+{to}",
                body=text,
                message_id=message_id,
            )
        )
        return _answer(
            to,
            "0",
            **{
                "message-id": message_id,
                "remaining-balance": "100.00",
                "message-price": "0.0333",
                "network": "12345",
            },
        )

    return Starlette(routes=[Route("/sms/json", send, methods=["POST"])])
