"""SMTP connections against a scripted server: reused across messages, replaced when the
server dropped one while idle, and each failure classified by whether DATA had begun."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest
from pydantic import SecretStr

from infra.emulators.server import Emulators, EmulatorSettings
from senders.providers.base import Message, PermanentError, RetriableError
from senders.providers.settings import SmtpSettings
from senders.providers.smtp import SmtpProvider

pytestmark = pytest.mark.asyncio
DEV_CA = Path(__file__).resolve().parents[3] / "infra/emulators/dev-credentials/emulator-tls.crt"

# Each command's reply; None: no reply (the server stalls), "close": drop the connection.
Script = Callable[[bytes], bytes | str | None]


class Server(asyncio.Protocol):
    def __init__(self, script: Script, log: list[bytes], pipelining: bool) -> None:
        self.pipelining = pipelining
        self.script = script
        self.log = log
        self.buffer = b""
        self.in_data = False
        self.greeted = False
        self.mail = False  # MAIL accepted in the current transaction
        self.recipients = 0  # accepted in the current transaction
        self.chunks: list[bytes] = []  # as read from the socket
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.write(b"220 test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffer += data
        while self.transport is not None:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.buffer = self.buffer[end + 5 :]
                self.in_data = False
                self.reply(b"END-OF-DATA", b"250 queued\r\n")
                continue
            line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                return
            self.buffer = rest
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
            default = {
                b"EHLO": b"250-test\r\n"
                + (b"250-PIPELINING\r\n" if self.pipelining else b"")
                + b"250 SMTPUTF8\r\n",
                b"DATA": b"354 go on\r\n",
                b"QUIT": b"221 bye\r\n",
            }.get(verb, b"250 ok\r\n")
            self.greeted = self.greeted or verb == b"EHLO"
            if verb == b"MAIL" and not self.greeted:
                default = b"503 send EHLO first\r\n"
            if verb in (b"MAIL", b"RSET"):
                self.recipients = 0
                self.mail = False
            if verb == b"RCPT" and not self.mail:
                default = b"503 5.5.1 MAIL first\r\n"
            if verb == b"DATA" and not self.recipients:
                default = b"554 5.5.1 no valid recipients\r\n"  # as RFC 2920 expects
            sent = self.reply(verb, default)
            if verb == b"RCPT" and sent.startswith(b"2"):
                self.recipients += 1
            self.mail = self.mail or (verb == b"MAIL" and sent.startswith(b"2"))
            if verb == b"DATA" and sent.startswith(b"354") and self.transport is not None:
                self.in_data = True

    def reply(self, verb: bytes, default: bytes) -> bytes:
        """Answer `verb` as scripted; what was written (b"" for nothing)."""
        self.log.append(verb)
        answer = self.script(verb)
        assert self.transport is not None
        if answer == "close":
            self.transport.close()
            self.transport = None
            return b""
        if answer is None:
            return b""
        written = answer if isinstance(answer, bytes) else default
        self.transport.write(written)
        return written


@pytest.fixture(params=[True, False], ids=["pipelining", "one-at-a-time"])
async def smtp_server(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[Script], object]]:
    """A scripted server, with and without PIPELINING (RFC 2920) in its EHLO reply."""
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> tuple[SmtpProvider, list[Server], list[bytes]]:
        protocols: list[Server] = []
        log: list[bytes] = []

        def factory() -> Server:
            protocols.append(Server(script, log, request.param))
            return protocols[-1]

        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        provider = SmtpProvider(SmtpSettings(port=port, pool_size=2, timeout_s=0.5))
        await provider.start()
        return provider, protocols, log

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def mail() -> Message:
    return Message(
        delivery_id=str(uuid.uuid4()),
        notification_id=str(uuid.uuid4()),
        channel="email",
        address="someone@example.org",
        body="hello",
        subject="hi",
    )


def default(verb: bytes) -> bytes | str | None:
    return "default"


async def test_one_connection_carries_consecutive_messages(smtp_server) -> None:  # type: ignore[no-untyped-def]
    provider, connections, log = await smtp_server(default)
    try:
        for _ in range(5):
            await provider.send(mail())
        assert len(connections) == 1
        assert log.count(b"END-OF-DATA") == 5
        assert log.count(b"EHLO") == 1
    finally:
        await provider.close()


async def test_concurrent_sends_open_at_most_pool_size_connections(smtp_server) -> None:  # type: ignore[no-untyped-def]
    provider, connections, log = await smtp_server(default)
    try:
        await asyncio.gather(*(provider.send(mail()) for _ in range(20)))
        assert len(connections) == 2
        assert log.count(b"END-OF-DATA") == 20
    finally:
        await provider.close()


async def test_a_connection_dropped_while_idle_is_replaced_without_an_error(smtp_server) -> None:  # type: ignore[no-untyped-def]
    provider, connections, log = await smtp_server(default)
    try:
        await provider.send(mail())
        # The server drops the idle connection; the client learns it only on next use.
        assert connections[0].transport is not None
        connections[0].transport.close()
        await asyncio.sleep(0)
        await provider.send(mail())
        assert len(connections) == 2
        assert log.count(b"END-OF-DATA") == 2
    finally:
        await provider.close()


async def test_a_refused_recipient_keeps_the_connection(smtp_server) -> None:  # type: ignore[no-untyped-def]
    answers = iter([b"550 5.1.1 no such user\r\n"])

    def script(verb: bytes) -> bytes | str | None:
        return next(answers, "default") if verb == b"RCPT" else "default"

    provider, connections, log = await smtp_server(script)
    try:
        with pytest.raises(PermanentError) as err:
            await provider.send(mail())
        assert err.value.invalid_address
        await provider.send(mail())
        assert len(connections) == 1
        assert b"RSET" in log
    finally:
        await provider.close()


async def test_no_answer_before_data_is_not_sent_and_after_it_ambiguous(smtp_server) -> None:  # type: ignore[no-untyped-def]
    stall = {b"RCPT"}

    def script(verb: bytes) -> bytes | str | None:
        return None if verb in stall else "default"

    provider, _, _ = await smtp_server(script)
    try:
        with pytest.raises(RetriableError) as before:
            await provider.send(mail())
        assert before.value.ambiguous is False
        stall.clear()
        stall.add(b"END-OF-DATA")
        with pytest.raises(RetriableError) as after:
            await provider.send(mail())
        assert after.value.ambiguous is True
    finally:
        await provider.close()


async def test_surplus_connections_close_once_idle_after_a_burst(  # type: ignore[no-untyped-def]
    smtp_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("senders.providers.smtp._MAX_IDLE_S", 0.2)
    provider, connections, log = await smtp_server(default)
    try:
        await asyncio.gather(*(provider.send(mail()) for _ in range(2)))
        assert len(connections) == 2
        for _ in range(6):  # a trickle: one connection suffices
            await asyncio.sleep(0.05)
            await provider.send(mail())
        assert len(connections) == 2
        assert log.count(b"QUIT") == 1
        assert len(provider._idle) == 1
    finally:
        await provider.close()


async def test_with_pipelining_the_envelope_goes_in_one_write(smtp_server) -> None:  # type: ignore[no-untyped-def]
    provider, connections, log = await smtp_server(default)
    try:
        await provider.send(mail())
        together = [c for c in connections[0].chunks if b"MAIL FROM" in c and b"DATA\r\n" in c]
        assert bool(together) == connections[0].pipelining
        assert log[-4:] == [b"MAIL", b"RCPT", b"DATA", b"END-OF-DATA"]
    finally:
        await provider.close()


async def test_a_refused_sender_is_permanent_and_keeps_the_connection(smtp_server) -> None:  # type: ignore[no-untyped-def]
    answers = iter([b"553 5.7.1 sender not allowed\r\n"])

    def script(verb: bytes) -> bytes | str | None:
        return next(answers, "default") if verb == b"MAIL" else "default"

    provider, connections, log = await smtp_server(script)
    try:
        with pytest.raises(PermanentError) as err:
            await provider.send(mail())
        assert not err.value.invalid_address  # the sender, not the recipient
        assert err.value.status == 553
        await provider.send(mail())
        assert len(connections) == 1
        assert log.count(b"END-OF-DATA") == 1
    finally:
        await provider.close()


async def test_a_421_said_while_idle_retires_the_connection(smtp_server) -> None:  # type: ignore[no-untyped-def]
    provider, connections, log = await smtp_server(default)
    try:
        await provider.send(mail())
        # Multiline, unasked: the server is about to close.
        assert connections[0].transport is not None
        connections[0].transport.write(b"421-4.4.2 idle\r\n421 4.4.2 closing\r\n")
        await asyncio.sleep(0.05)
        await provider.send(mail())
        assert len(connections) == 2
        assert log.count(b"END-OF-DATA") == 2
    finally:
        await provider.close()


async def test_starttls_and_auth_against_the_strict_emulator() -> None:
    """aiosmtpd behind the strict emulator: STARTTLS, then AUTH, on this test's loop (the
    senders run on uvloop, whose `start_tls` the client relies on)."""
    settings = EmulatorSettings(
        _env_file=None,  # type: ignore[call-arg]
        **{f"{name}_port": 0 for name in ("apns", "fcm", "twilio", "vonage", "smtp")},
        sendgrid_port=0,
        control_port=0,
        smtp_auth_required=True,
        smtp_username="herald",
        smtp_password=SecretStr("secret"),
    )
    emulators = Emulators(settings)
    await emulators.start()
    assert emulators.ports is not None
    base = {
        "port": emulators.ports.smtp,
        "start_tls": True,
        "ca_file": DEV_CA,
        "username": "herald",
    }
    good = SmtpProvider(SmtpSettings(**base, password=SecretStr("secret")))
    bad = SmtpProvider(SmtpSettings(**base, password=SecretStr("wrong")))
    try:
        await good.start()
        await bad.start()
        message = mail()
        await good.send(message)
        assert [e.delivery_id for e in emulators.state.ledger] == [message.delivery_id]
        with pytest.raises(PermanentError) as refused:  # 535: a misconfiguration
            await bad.send(mail())
        assert refused.value.status == 535
    finally:
        await good.close()
        await bad.close()
        await emulators.stop()
