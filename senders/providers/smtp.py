"""Email over SMTP: the primary email provider.

A small pool of open connections (EHLO, optional STARTTLS or implicit TLS, optional AUTH
done once per connection), one message at a time on each, through herald's own client
(`smtp_client`): with PIPELINING a message costs two round trips, not four. The message is multipart
text + HTML; `Message-ID` is derived from the delivery id, so a resend after an ambiguous
failure is recognisable as the same message, and `X-Herald-Delivery-Id` carries it as is.

Errors (RFC 5321 §4.2.1): 4yz replies are transient and retried; 5yz are permanent, and a
550/551/553 on the recipient (or an enhanced 5.1.x status) rejects the address. A lost
connection, a timeout or a refused connect is retried.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import socket
import ssl
import time
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr

from senders.providers.base import (
    DeliveryError,
    Message,
    PermanentError,
    Provider,
    RetriableError,
    SendResult,
)
from senders.providers.settings import SmtpSettings
from senders.providers.smtp_client import (
    RecipientRefused,
    ReplyError,
    SmtpConnection,
    SmtpError,
)

_BAD_MAILBOX = frozenset({550, 551, 553})
# Servers drop idle sessions (RFC 5321 suggests 5 min); an older one is not reused.
_MAX_IDLE_S = 30.0


def _one_line(value: str) -> str:
    # Anything a receiver may take for a line end (CR, LF, U+2028, the C0/C1 separators
    # that str.splitlines honours) could end the header or smuggle a new one.
    if "\x00" in value or (value and value.splitlines() != [value]):
        raise ValueError("a line break in a header field")
    return value


def _header(value: str) -> str:
    if _one_line(value).isascii() and len(value) <= 900 and value == value.strip():
        return value
    # RFC 2047 encoded words, folded: non-ASCII text, a line longer than RFC 5322 allows, or
    # leading or trailing blanks (which parsers strip from a plain header value).
    return Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")


def _part(content_type: str, text: str) -> bytes:
    body = base64.encodebytes(text.encode()).replace(b"\n", b"\r\n")
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + body


@functools.cache
def _from_header(from_address: str) -> str:
    # Parsing and formatting the address cost more than the rest of the message together.
    name, sender = parseaddr(from_address)
    return formataddr((name, sender), "utf-8") if name else sender


def build_email(message: Message, settings: SmtpSettings) -> tuple[str, bytes]:
    """(Message-ID, the RFC 5322 message as sent). Written directly rather than through
    `email.message.EmailMessage`, whose header registry and generator cost milliseconds
    per message; bodies are base64 (any text, any line length) and every header value is
    checked: a line break in one raises ValueError before anything goes on the wire. So
    every line ends in CRLF and none starts with "." (headers start with their name or,
    folded, a blank; base64 lines and boundaries never with a dot): the client sends it
    without scanning it again (`framed`, tests/unit/senders/test_providers_email.py)."""
    message_id = f"<{message.delivery_id}@{settings.message_id_domain}>"
    headers = [
        ("From", _from_header(settings.from_address)),
        # An internationalised address goes as UTF-8 (RFC 6532, sent with SMTPUTF8).
        ("To", _one_line(message.address)),
        ("Subject", _header(message.subject or message.title or "")),
        ("Date", formatdate(localtime=False, usegmt=True)),
        ("Message-ID", _header(message_id)),
        ("X-Herald-Delivery-Id", _header(message.delivery_id)),
        ("X-Herald-Notification-Id", _header(message.notification_id)),
        ("MIME-Version", "1.0"),
        *((k, _header(v)) for k, v in message.unsubscribe_headers()),
    ]
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode()
    text = _part("text/plain", message.body or "")
    if not message.html:
        return message_id, head + text
    # A base64 line never starts with "--", so the boundary cannot occur in a part.
    boundary = f"==herald-{message.delivery_id}=="
    return message_id, (
        head
        + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode()
        + f"--{boundary}\r\n".encode()
        + text
        + f"--{boundary}\r\n".encode()
        + _part("text/html", message.html)
        + f"--{boundary}--\r\n".encode()
    )


def map_error(exc: Exception, provider: str = "smtp", *, sending: bool = True) -> DeliveryError:
    """`sending`: the failure came after the message was handed over (not while connecting)."""
    if isinstance(exc, RecipientRefused):
        bad = exc.code in _BAD_MAILBOX or " 5.1." in f" {exc.text}"
        if 400 <= exc.code < 500:
            return RetriableError(
                f"smtp:{exc.code} recipient deferred", provider=provider, status=exc.code
            )
        return PermanentError(
            f"smtp:{exc.code} recipient refused",
            provider=provider,
            status=exc.code,
            invalid_address=bad,
        )
    if isinstance(exc, ReplyError):
        code = exc.code
        if 400 <= code < 500:
            return RetriableError(f"smtp:{code}", provider=provider, status=code)
        return PermanentError(f"smtp:{code}", provider=provider, status=code)
    # Disconnects, timeouts, refused connects, TLS failures: no verdict from the server. Only
    # one after the message went out leaves open whether the server kept it.
    return RetriableError(f"smtp:{type(exc).__name__}", provider=provider, ambiguous=sending)


class SmtpProvider(Provider):
    name = "smtp"
    channels = frozenset({"email"})

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: list[tuple[SmtpConnection, float]] = []
        self._slots = asyncio.Semaphore(settings.pool_size)
        self.concurrency = settings.pool_size
        self._tls: ssl.SSLContext | None = None
        self._local_hostname = "localhost"
        # The envelope's MAIL FROM, built once.
        self._mail_from = f"FROM:<{parseaddr(settings.from_address)[1]}>".encode()

    async def start(self) -> None:
        s = self.settings
        if s.use_tls or s.start_tls:
            self._tls = ssl.create_default_context()
            if s.ca_file:
                self._tls.load_verify_locations(cafile=str(s.ca_file))
            if not s.validate_certs:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE
        # How EHLO names this host (RFC 5321 §4.1.4); looked up once, off the event loop.
        self._local_hostname = await asyncio.to_thread(socket.getfqdn) or "localhost"

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await conn.quit()

    async def send(self, message: Message) -> SendResult:
        try:
            message_id, raw = build_email(message, self.settings)
        except ValueError as exc:  # e.g. a line break in the subject: nothing was sent
            raise PermanentError(
                "smtp:unsendable message", provider=self.name, ambiguous=False
            ) from exc
        # build_email refused any line break in the address.
        rcpt_to = f"TO:<{message.address}>".encode()
        mail_from = self._mail_from
        if not message.address.isascii():
            mail_from += b" SMTPUTF8"
        async with self._slots:
            for attempt in range(2):
                try:
                    conn, reused = await self._checkout()
                except SmtpError as exc:
                    raise map_error(exc, self.name, sending=False) from exc
                try:
                    await conn.send_mail(mail_from, rcpt_to, raw, framed=True)
                except ReplyError as exc:
                    # A reply: the session is in a known state, so it is pooled again.
                    await self._release(conn, exc)
                    raise map_error(exc, self.name, sending=exc.sent) from exc
                except SmtpError as exc:
                    conn.close()  # the message may be half sent: never reuse
                    if reused and attempt == 0 and not exc.sent:
                        continue  # dropped while idle: once more on a new connection
                    raise map_error(exc, self.name, sending=exc.sent) from exc
                except BaseException:
                    conn.close()
                    raise
                await self._pool(conn)
                return SendResult(self.name, message_id)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _release(self, conn: SmtpConnection, exc: ReplyError) -> None:
        """The server refused with a reply, so the connection is in a known state: reset the
        transaction and pool it again (a refused address costs no reconnect)."""
        if exc.code == 421 or not conn.usable:  # 421: the server is closing the connection
            conn.close()
            return
        try:
            await conn.reset()
        except SmtpError:
            conn.close()
            return
        await self._pool(conn)

    async def _pool(self, conn: SmtpConnection) -> None:
        """Back on top of the idle stack. Sends take the most recently used connection, so
        after a burst the surplus ones sink to the bottom; one idle there for `_MAX_IDLE_S`
        is closed: the pool follows the load down as well as up."""
        now = time.monotonic()
        self._idle.append((conn, now))
        if now - self._idle[0][1] >= _MAX_IDLE_S:
            stale, _ = self._idle.pop(0)
            await stale.quit()

    async def _checkout(self) -> tuple[SmtpConnection, bool]:
        """An open connection, and whether it was pooled (may have been dropped while idle)."""
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()
            if conn.usable and now - since < _MAX_IDLE_S:
                return conn, True
            await conn.quit()
        s = self.settings
        conn = await SmtpConnection.open(
            s.host,
            s.port,
            local_hostname=self._local_hostname,
            timeout_s=s.timeout_s,
            tls=self._tls,
            implicit_tls=s.use_tls,
            start_tls=s.start_tls,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
        )
        return conn, False
