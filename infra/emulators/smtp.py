"""SMTP emulator: a real SMTP server (aiosmtpd) that records what it accepts.

Offers STARTTLS when given a TLS context (AUTH then only after it), and AUTH PLAIN/LOGIN;
with `auth_required`, mail from an unauthenticated session is refused (530). Faults act at
RCPT time, in SMTP's own vocabulary: `unregistered` → 550 5.1.1, `throttle` → 451 4.7.1,
`error` → the given status (default 451 4.3.0), `timeout` → no reply.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import socket
import ssl
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from infra.emulators.state import Accepted, EmulatorState

FAULT_REPLIES = {
    421: "421 4.3.2 Service not available, closing transmission channel",
    450: "450 4.2.1 Mailbox temporarily unavailable",
    451: "451 4.3.0 Temporary failure, try again later",
    452: "452 4.3.1 Insufficient system storage",
    550: "550 5.1.1 Recipient address rejected: user unknown",
    552: "552 5.2.2 Mailbox full",
    554: "554 5.7.1 Message rejected",
}


def _text(message: EmailMessage) -> str | None:
    part = message.get_body(preferencelist=("plain", "html"))
    return None if part is None else str(part.get_content()).rstrip("\r\n")


class Handler:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = await self.state.before("smtp", address)
        if fault is not None:
            if fault.mode == "unregistered":
                return FAULT_REPLIES[550]
            if fault.mode == "throttle":
                return "451 4.7.1 Rate limited, try again later"
            status = fault.status or 451
            return FAULT_REPLIES.get(status, f"{status} Injected fault")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        queue_id = secrets.token_hex(6).upper()
        for rcpt in envelope.rcpt_tos:
            self.state.record(
                Accepted(
                    provider="smtp",
                    channel="email",
                    delivery_id=message.get("X-Herald-Delivery-Id"),
                    address=rcpt,
                    subject=message.get("Subject"),
                    body=_text(message),
                    message_id=message.get("Message-ID"),
                )
            )
        return f"250 2.0.0 OK: queued as {queue_id}"


class _Authenticator:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)


async def serve(
    state: EmulatorState,
    sock: socket.socket,
    *,
    users: dict[str, str],
    auth_required: bool = False,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """Start serving on the bound `sock`; returns the asyncio server (close it to stop)."""
    handler = Handler(state)
    authenticator = _Authenticator(users)

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="herald-smtp-emulator",
            tls_context=tls,
            authenticator=authenticator,
            auth_required=auth_required,
            auth_require_tls=tls is not None,
            decode_data=False,
        )

    return await asyncio.get_running_loop().create_server(factory, sock=sock)
