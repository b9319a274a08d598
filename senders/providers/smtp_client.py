"""A lean SMTP client (RFC 5321) for the SMTP provider: one connection per object.

Replies are matched to commands in the order they were sent, so a transaction can go out
in one write when the server offers PIPELINING (RFC 2920): `MAIL`, `RCPT` and `DATA`
together, then the message once `354` came back. Two round trips and two writes per
message instead of four of each. A server without PIPELINING gets the commands one at a
time. A whole transaction has one deadline (one timer), not one per command.

Errors say where they happened. `sent` is False when the message body never left this
process (any failure up to the `354`), so the message cannot have been accepted. `ReplyError`
carries the server's code; anything else (a lost connection, a timeout, a refused connect)
has none. A connection that failed without a reply, or timed out, is closed: replies
still due on it could no longer be matched to their commands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from collections import deque
from typing import NamedTuple

from schemas.errors import HeraldError

_MAX_REPLY = 64 * 1024  # of one reply's lines together; a server sending more is broken
_BARE_LINE_END = re.compile(rb"\r\n|\r|\n")


class Reply(NamedTuple):
    code: int
    text: str


class SmtpError(HeraldError):
    """`sent`: the message body was handed over (the server may have kept it)."""

    sent = False
    retriable = True  # no verdict from the server: another connection may do


class ConnectFailed(SmtpError):
    """No session: refused, unreachable, timed out, or the TLS handshake failed."""


class Disconnected(SmtpError):
    """The server closed the connection, or a reply could not be read."""


class Timeout(SmtpError):
    """No reply within the deadline."""


class ReplyError(SmtpError):
    """The server answered `code` where the transaction needed another reply."""

    def __init__(self, code: int, text: str, command: str) -> None:
        super().__init__(f"{command}: {code} {text}")
        self.retriable = 400 <= code < 500  # RFC 5321 §4.2.1: 4yz transient, 5yz permanent
        self.code = code
        self.text = text
        self.command = command


class RecipientRefused(ReplyError):
    pass


class _Wire(asyncio.Protocol):
    """Bytes in, replies out: each complete reply answers the oldest waiting command."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer = bytearray()
        self._lines: list[str] = []  # of the reply being read (multiline: "250-...")
        self._waiters: deque[asyncio.Future[Reply]] = deque()
        self.transport: asyncio.Transport | None = None
        self.failure: SmtpError | None = None  # set once: the connection is unusable
        self.unsolicited: Reply | None = None  # e.g. "421 idle timeout" before a close
        # Waiting from the start: the server greets as soon as it accepts the connection.
        self.greeting: asyncio.Future[Reply] = loop.create_future()
        self._waiters.append(self.greeting)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is only alike

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
                self.fail(Disconnected(f"not an SMTP reply: {line[:80]!r}"))
                return
            self._lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] == b"-":
                continue
            reply = Reply(int(line[:3]), "\n".join(self._lines))
            self._lines = []
            self._answer(reply)
        if len(buffer) > _MAX_REPLY or sum(map(len, self._lines)) > _MAX_REPLY:
            self.fail(Disconnected("reply too long"))

    def _answer(self, reply: Reply) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(reply)
                return
        self.unsolicited = reply

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fail(Disconnected("connection lost"))

    def fail(self, error: SmtpError) -> None:
        """Answer every waiting command with `error`; the connection is not used again."""
        if self.failure is None:
            self.failure = error
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes, replies: int) -> list[asyncio.Future[Reply]]:
        """Write `data` (commands ending in CRLF) and the futures of its next `replies`."""
        futures = [self._loop.create_future() for _ in range(replies)]
        if self.failure is not None or self.transport is None:
            error = self.failure or Disconnected("not connected")
            for fut in futures:
                fut.set_exception(error)
        else:
            self._waiters.extend(futures)
            self.transport.write(data)
        return futures


class _Deadline:
    """One timer for a whole exchange: when it fires, the wire fails with `Timeout`."""

    def __init__(self, wire: _Wire, seconds: float, what: str) -> None:
        self._handle = wire._loop.call_later(seconds, wire.fail, Timeout(f"{what}: no reply"))

    def __enter__(self) -> _Deadline:
        return self

    def __exit__(self, *_: object) -> None:
        self._handle.cancel()


async def _one(wire: _Wire, data: bytes) -> Reply:
    (fut,) = wire.send(data, 1)
    return await fut


class SmtpConnection:
    """An open session, greeted (EHLO), upgraded (STARTTLS) and authenticated as asked."""

    def __init__(self, wire: _Wire, extensions: dict[str, str], timeout_s: float) -> None:
        self._wire = wire
        self.extensions = extensions  # EHLO keywords (upper case) -> their parameters
        self.pipelining = "PIPELINING" in extensions
        self._timeout_s = timeout_s

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        local_hostname: str,
        timeout_s: float,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        start_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> SmtpConnection:
        loop = asyncio.get_running_loop()
        wire = _Wire(loop)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: wire,
                    host,
                    port,
                    ssl=tls if implicit_tls else None,
                    server_hostname=host if implicit_tls else None,
                ),
                timeout_s,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise ConnectFailed(f"connect to {host}:{port}: {exc!r}") from exc
        try:
            with _Deadline(wire, timeout_s, "session setup"):
                extensions = await cls._setup(
                    wire, host, local_hostname, tls, start_tls, username, password
                )
        except BaseException:
            wire.fail(Disconnected("session setup failed"))
            raise
        return cls(wire, extensions, timeout_s)

    @staticmethod
    async def _setup(
        wire: _Wire,
        host: str,
        local_hostname: str,
        tls: ssl.SSLContext | None,
        start_tls: bool,
        username: str | None,
        password: str | None,
    ) -> dict[str, str]:
        reply = await wire.greeting
        if reply.code != 220:
            raise ReplyError(reply.code, reply.text, "greeting")
        ehlo = f"EHLO {local_hostname}\r\n".encode()
        extensions = _extensions(await _one(wire, ehlo))
        if start_tls:
            if "STARTTLS" not in extensions:
                raise ConnectFailed("the server does not offer STARTTLS")
            reply = await _one(wire, b"STARTTLS\r\n")
            if reply.code != 220:
                raise ReplyError(reply.code, reply.text, "STARTTLS")
            assert wire.transport is not None and tls is not None
            loop = asyncio.get_running_loop()
            try:
                wire.transport = await loop.start_tls(
                    wire.transport, wire, tls, server_hostname=host
                )
            except (OSError, ConnectionError) as exc:
                raise ConnectFailed(f"STARTTLS handshake: {exc!r}") from exc
            extensions = _extensions(await _one(wire, ehlo))  # RFC 3207: greet again
        if username is not None:
            await _authenticate(wire, extensions.get("AUTH", ""), username, password or "")
        return extensions

    @property
    def usable(self) -> bool:
        """Open, and the server said nothing unasked (such as a 421 before closing)."""
        wire = self._wire
        return wire.failure is None and wire.transport is not None and wire.unsolicited is None

    async def send_mail(
        self, mail_from: bytes, rcpt_to: bytes, message: bytes, *, framed: bool = False
    ) -> Reply:
        """One transaction: `mail_from`/`rcpt_to` are the commands' arguments
        (`FROM:<a> SMTPUTF8`, `TO:<b>`), `message` the RFC 5322 message. `framed`: the
        caller guarantees CRLF line ends and no line starting with "." (the provider's own
        messages, property-tested), so DATA need not scan it for either: the two-byte
        searches cost ~4 µs per KB. Returns the server's acceptance; raises `SmtpError`
        (`sent` says whether the message went out before the failure)."""
        wire = self._wire
        mail = b"MAIL " + mail_from + b"\r\n"
        rcpt = b"RCPT " + rcpt_to + b"\r\n"
        with _Deadline(wire, self._timeout_s, "transaction"):
            if self.pipelining:
                # All three replies are read before judging any: the session is then in a
                # known state whatever they say.
                futures = wire.send(mail + rcpt + b"DATA\r\n", 3)
                replies = [await fut for fut in futures]
            else:
                replies = [await _one(wire, mail)]
                if replies[0].code == 250:
                    replies.append(await _one(wire, rcpt))
                    if replies[1].code in (250, 251):
                        replies.append(await _one(wire, b"DATA\r\n"))
            try:
                _envelope_accepted(replies)
            except ReplyError:
                if replies[-1].code == 354:
                    # DATA accepted although MAIL or RCPT was refused (a broken server): it
                    # now reads a message, so no command can follow on this connection.
                    self.close()
                raise
            (done,) = wire.send(_framed(message) if framed else _data(message), 1)
            try:
                reply = await done
            except SmtpError as exc:
                exc.sent = True
                raise
        if reply.code != 250:
            raise ReplyError(reply.code, reply.text, "end of data")
        return reply

    async def reset(self) -> None:
        """RSET after a refused transaction: the session is ready for the next one."""
        with _Deadline(self._wire, self._timeout_s, "RSET"):
            reply = await _one(self._wire, b"RSET\r\n")
        if reply.code != 250:
            raise ReplyError(reply.code, reply.text, "RSET")

    async def quit(self, timeout_s: float = 2.0) -> None:
        """QUIT politely if the session is usable, then close whatever the outcome."""
        wire = self._wire
        if self.usable:
            with _Deadline(wire, timeout_s, "QUIT"), contextlib.suppress(SmtpError):
                await _one(wire, b"QUIT\r\n")
        self.close()

    def close(self) -> None:
        self._wire.fail(Disconnected("closed by the client"))


def _envelope_accepted(replies: list[Reply]) -> None:
    """MAIL, RCPT and DATA replies (fewer when sent one at a time and one was refused)."""
    mail = replies[0]
    if mail.code != 250:
        raise ReplyError(mail.code, mail.text, "MAIL")
    rcpt = replies[1]
    if rcpt.code not in (250, 251):
        raise RecipientRefused(rcpt.code, rcpt.text, "RCPT")
    data = replies[2]
    if data.code != 354:
        raise ReplyError(data.code, data.text, "DATA")


def _data(message: bytes) -> bytes:
    """The message as DATA carries it: CRLF line ends, leading dots doubled (RFC 5321
    §4.5.2), ended by a line with one dot. Any message is checked for both; the
    provider's own, which need neither by construction, skip this (`framed`)."""
    if message.count(b"\n") != message.count(b"\r\n") or message.count(b"\r") != message.count(
        b"\r\n"
    ):
        message = _BARE_LINE_END.sub(b"\r\n", message)
    if message.startswith(b".") or b"\n." in message:
        message = re.sub(rb"(?m)^\.", b"..", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


def _framed(message: bytes) -> bytes:
    """A message that needs neither fix of `_data`, as DATA carries it."""
    return message + (b".\r\n" if message.endswith(b"\r\n") else b"\r\n.\r\n")


def _extensions(reply: Reply) -> dict[str, str]:
    if reply.code != 250:
        raise ReplyError(reply.code, reply.text, "EHLO")
    found = {}
    for line in reply.text.split("\n")[1:]:  # the first line is the server's greeting
        keyword, _, params = line.strip().partition(" ")
        found[keyword.upper()] = params
    return found


async def _authenticate(wire: _Wire, offered: str, username: str, password: str) -> None:
    mechanisms = offered.upper().split()
    if "PLAIN" in mechanisms:
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        reply = await _one(wire, f"AUTH PLAIN {token}\r\n".encode())
    elif "LOGIN" in mechanisms:
        reply = await _one(wire, b"AUTH LOGIN\r\n")
        for secret in (username, password):
            if reply.code != 334:
                break
            reply = await _one(wire, base64.b64encode(secret.encode()) + b"\r\n")
    else:
        raise ConnectFailed(f"no AUTH mechanism herald speaks (PLAIN, LOGIN) in {offered!r}")
    if reply.code != 235:
        raise ReplyError(reply.code, reply.text, "AUTH")
