"""herald's SMTP client below the provider: replies read from any chunking, DATA framed."""

from __future__ import annotations

import asyncio

import pytest

from senders.providers.smtp_client import Disconnected, Reply, _data, _Wire


def test_data_is_terminated_and_left_alone_when_clean() -> None:
    assert _data(b"A: b\r\n\r\nhello\r\n") == b"A: b\r\n\r\nhello\r\n.\r\n"


def test_data_gets_crlf_line_ends_and_doubled_leading_dots() -> None:
    framed = _data(b".top\nmiddle\r.\r\n.end")
    assert framed == b"..top\r\nmiddle\r\n..\r\n..end\r\n.\r\n"


class _Transport:
    def __init__(self) -> None:
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


@pytest.mark.asyncio
async def test_replies_split_anywhere_answer_commands_in_order() -> None:
    wire = _Wire(asyncio.get_running_loop())
    transport = _Transport()
    wire.connection_made(transport)  # type: ignore[arg-type]
    raw = b"220 hi\r\n250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n354 go\r\n"
    wire.data_received(raw[:5])
    assert not wire.greeting.done()
    wire.data_received(raw[5:17])  # the greeting and part of the EHLO reply
    assert wire.greeting.result() == Reply(220, "hi")
    ehlo, data = wire.send(b"EHLO a\r\nDATA\r\n", 2)
    assert transport.written == b"EHLO a\r\nDATA\r\n"
    for at in range(17, len(raw)):  # one byte at a time
        wire.data_received(raw[at : at + 1])
    assert ehlo.result() == Reply(250, "mx.example\nPIPELINING\nSIZE 100")
    assert data.result() == Reply(354, "go")
    assert wire.unsolicited is None and not transport.aborted


@pytest.mark.asyncio
async def test_a_line_that_is_no_reply_fails_the_connection() -> None:
    wire = _Wire(asyncio.get_running_loop())
    wire.data_received(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(Disconnected):
        wire.greeting.result()
    assert wire.failure is not None
