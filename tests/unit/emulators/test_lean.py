"""The lean emulators' protocols, byte by byte: HTTP/1.1 keep-alive and pipelining,
HTTP/2 against the `h2` client state machine, SMTP with PIPELINING."""

from __future__ import annotations

import asyncio
from pathlib import Path

import h2.config
import h2.connection
import h2.events

from infra.emulators.lean import Headers, HttpProtocol, SmtpProtocol
from infra.emulators.state import EmulatorState


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def echo(
    method: bytes, path: bytes, headers: Headers, body: bytes
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    # At most 20,000 bytes back: more than one HTTP/2 frame, less than the client's window.
    return (
        200,
        [(b"x-path", path)],
        headers.get(b"x-herald-delivery-id", b"") + b":" + body[:20_000],
    )


def _connected(protocol: asyncio.Protocol) -> FakeTransport:
    transport = FakeTransport()
    protocol.connection_made(transport)
    return transport


def test_http1_pipelined_and_split_requests_each_get_their_answer() -> None:
    protocol = HttpProtocol(echo)
    transport = _connected(protocol)
    request = b"POST /a HTTP/1.1\r\nX-Herald-Delivery-Id: %s\r\nContent-Length: 2\r\n\r\nhi"

    protocol.data_received(request % b"d1" + request % b"d2" + (request % b"d3")[:20])
    protocol.data_received((request % b"d3")[20:])

    answers = bytes(transport.written).split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [b"d1:hi", b"d2:hi", b"d3:hi"]
    assert all(b"content-length: 5\r\n" in a and b"x-path: /a\r\n" in a for a in answers)
    assert not transport.closed


def test_http1_connection_close_is_honoured() -> None:
    protocol = HttpProtocol(echo)
    transport = _connected(protocol)

    protocol.data_received(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")

    assert transport.written.startswith(b"HTTP/1.1 200 OK")
    assert transport.closed


def test_http2_streams_answered_as_an_h2_client_expects() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    protocol = HttpProtocol(echo)
    transport = _connected(protocol)
    protocol.data_received(client.data_to_send())
    greeting = client.receive_data(bytes(transport.written))
    transport.written.clear()
    for i, stream in enumerate((1, 3, 5)):
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", "apns")]
        headers += [(":path", f"/3/device/{i}"), ("x-herald-delivery-id", f"d{i}")]
        client.send_headers(stream, headers, end_stream=stream == 5)  # 5 has no body
        if stream == 1:
            # Past HTTP/2's default 64 KiB window, in frames: the server granted more.
            for _ in range(7):
                client.send_data(stream, b"x" * 10_000)
            client.end_stream(stream)
        elif stream == 3:
            client.send_data(stream, b"{}", end_stream=True)
    outgoing = client.data_to_send()

    for at in range(0, len(outgoing), 1000):  # arbitrary TCP segments
        protocol.data_received(outgoing[at : at + 1000])
    events = client.receive_data(bytes(transport.written))

    answers = {
        e.stream_id: dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)
    }
    bodies: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, h2.events.DataReceived):
            bodies[e.stream_id] = bodies.get(e.stream_id, b"") + e.data
    ended = {e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)}
    assert {s: h[b":status"] for s, h in answers.items()} == {1: b"200", 3: b"200", 5: b"200"}
    assert answers[3][b"x-path"] == b"/3/device/1"
    assert bodies[1] == b"d0:" + b"x" * 20_000
    assert bodies[5] == b"d2:"
    assert ended == {1, 3, 5}
    settings = next(e for e in greeting if isinstance(e, h2.events.RemoteSettingsChanged))
    streams = settings.changed_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]
    assert streams.new_value == 1000


def test_smtp_pipelined_transaction_records_the_delivery_once_per_recipient(
    tmp_path: Path,
) -> None:
    state = EmulatorState(receipts=tmp_path / "r.jsonl")
    protocol = SmtpProtocol(state)
    transport = _connected(protocol)
    message = b"Subject: hi\r\nX-Herald-Delivery-Id: d-42\r\n\r\nbody\r\n..dot-stuffed\r\n.\r\n"

    protocol.data_received(b"EHLO me\r\nDATA\r\n")
    protocol.data_received(
        b"MAIL FROM:<a@x.io>\r\nRCPT TO:<b@x.io>\r\nRCPT TO:<c@x.io>\r\nDATA\r\n"
    )
    protocol.data_received(message[:30])
    protocol.data_received(message[30:] + b"QUIT\r\n")

    replies = [line[:3] for line in bytes(transport.written).split(b"\r\n") if line]
    ehlo = [b"250"] * 5  # one line per extension
    envelope = [b"250", b"250", b"250", b"354"]
    assert replies == [b"220", *ehlo, b"503", *envelope, b"250", b"221"]
    assert [(e["delivery_id"], e["address"]) for e in state.entries()] == [
        ("d-42", "b@x.io"),
        ("d-42", "c@x.io"),
    ]
    assert transport.closed
    state.close()
