"""A lean HTTP/2 client for the push providers: many streams on few connections.

httpx/httpcore cost milliseconds of CPU per request at a few hundred concurrent streams
and fold every stream failure into one `RemoteProtocolError`, losing what HTTP/2 says
about whether the server can have processed a request. This client frames HTTP/2 itself
on an asyncio protocol (the `h2` package's state machine and `hpack` cost ~300 to 400 µs of
CPU per push; header blocks go out as never-indexed literals and come in through
`infra.hpack_lean`) and keeps that per stream (RFC 9113 §8.7):

- a stream refused with REFUSED_STREAM, or above the last-stream-id of a GOAWAY, was
  certainly not processed: `StreamError(sent=False)`;
- any other reset, a lost connection or a timeout may have been: `StreamError(sent=True)`.

Each connection opens at most as many streams as the server's SETTINGS_MAX_CONCURRENT_STREAMS,
read from its SETTINGS frames for as long as the connection lives (APNs lowers it after
errors); a new connection is opened only when every open one is full, up to
`max_connections`, and a request waits for a free stream beyond that.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import urlsplit

from infra.h2frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    FrameReader,
    frame,
    header_fragment,
    unpadded,
)
from infra.hpack_lean import HeaderDecoder, encode_request
from schemas.errors import HeraldError
from senders.providers._http import ssl_context

# Inbound flow-control windows: answers are small, so the server never waits on us.
_WINDOW = 1 << 24
# Stop opening streams on a connection this close to running out of stream ids (2^31).
_LAST_STREAM_ID = (1 << 31) - 1024
# A CR, LF or NUL would end the header field; nothing is sent for such a request.
_BREAKS_HEADER = re.compile(rb"[\r\n\x00]")


class StreamError(HeraldError):
    """No answer for one request. `sent=False`: the server certainly did not process it."""

    retriable = True

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class _Stream:
    __slots__ = ("body", "done", "ended", "headers", "status", "timer")

    def __init__(self, done: asyncio.Future[Response]) -> None:
        self.done = done
        self.ended = False  # END_STREAM or RST_STREAM seen, or reset by us
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.timer: asyncio.TimerHandle | None = None


# SETTINGS ids and error codes (RFC 9113 §6.5.2, §7). The server's HEADER_TABLE_SIZE is
# not read: our header blocks never index, so they fit any table.
S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 0x2, 0x3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE = 0x4, 0x5
NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x0, 0x1, 0x7, 0x8, 0x9
_CODE_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
_DEFAULT_WINDOW = 65_535
_UNLIMITED = 2**32 + 1  # no SETTINGS_MAX_CONCURRENT_STREAMS from the server yet


class _ProtocolError(HeraldError):
    """The server broke HTTP/2; the connection is closed with this code."""

    def __init__(self, reason: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection, framed by hand (RFC 9113): HEADERS and DATA out, answers,
    resets, GOAWAY, SETTINGS, PING and flow control in. A GOAWAY closes it to new streams
    while the streams at or below its last-stream-id are still answered (§6.8)."""

    def __init__(self, client: H2Client) -> None:
        self._client = client
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._window_open: dict[int, asyncio.Future[None]] = {}
        self._send_windows: dict[int, int] = {}  # streams with body left to send
        self._decoder = HeaderDecoder()
        self._frames = FrameReader(DEFAULT_MAX_FRAME)
        self._out: list[bytes] = []
        self._flush_due = False  # a `_flush` is scheduled for the end of this loop turn
        self._pending: tuple[int, int, bytearray] | None = None  # HEADERS awaiting CONTINUATION
        self._next_id = 1
        self._max_streams = _UNLIMITED
        self._peer_window = _DEFAULT_WINDOW  # SETTINGS_INITIAL_WINDOW_SIZE of the server
        self._peer_max_frame = 16_384
        self._conn_window = _DEFAULT_WINDOW  # what we may still send on the connection
        self._unacked_in = 0  # DATA received since our last connection WINDOW_UPDATE
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.active = 0  # streams opened or reserved on this connection
        self.closed = False  # no new streams: GOAWAY received, lost, or out of stream ids

    # The server's limit, as of its latest SETTINGS frame.
    @property
    def max_streams(self) -> int:
        return self._max_streams

    def has_room(self) -> bool:
        return not self.closed and self.ready.done() and self.active < self._max_streams

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        settings = struct.pack(">HIHI", S_ENABLE_PUSH, 0, S_INITIAL_WINDOW_SIZE, _WINDOW)
        self._out += (
            PREFACE,
            frame(SETTINGS, 0, 0, settings),
            frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", _WINDOW - _DEFAULT_WINDOW)),
        )
        self._flush()

    def _flush_soon(self) -> None:
        """Flush once the loop has run what is ready: the requests that start in one turn
        of the loop (deliveries whose claims one ledger round settled) leave in one write,
        one TLS record and one syscall, not one each."""
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_due_now)

    def _flush_due_now(self) -> None:
        self._flush_due = False
        self._flush()

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            if self._transport is not None and not self._transport.is_closing():
                self._transport.write(data)

    async def request(
        self,
        method: bytes,
        authority: bytes,
        scheme: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout_s: float,
    ) -> Response:
        loop = asyncio.get_running_loop()
        stream_id = self._next_id
        self._next_id += 2
        if stream_id >= _LAST_STREAM_ID:
            self.closed = True
        stream = _Stream(loop.create_future())
        self._streams[stream_id] = stream
        try:
            stream.timer = loop.call_later(timeout_s, self._timed_out, stream_id)
            block = encode_request(method, authority, scheme, path, headers)
            self._headers(stream_id, block, end_stream=not body)
            # Headers and the first DATA frames leave in one write (one syscall).
            view = memoryview(body)
            if view:
                self._send_windows[stream_id] = self._peer_window
            while view:
                window = min(self._send_windows[stream_id], self._conn_window, self._peer_max_frame)
                if window <= 0:
                    self._flush()
                    waiter = self._window_open[stream_id] = loop.create_future()
                    await asyncio.wait((waiter, stream.done), return_when=asyncio.FIRST_COMPLETED)
                    self._window_open.pop(stream_id, None)
                    if stream.done.done():
                        break
                    continue
                chunk, view = view[:window], view[window:]
                self._send_windows[stream_id] -= len(chunk)
                self._conn_window -= len(chunk)
                self._out.append(frame(DATA, 0 if view else END_STREAM, stream_id, bytes(chunk)))
            self._flush_soon()
            return await stream.done
        except asyncio.CancelledError:
            self._reset(stream_id)
            raise
        finally:
            self._end(stream_id)

    def _headers(self, stream_id: int, block: bytes, *, end_stream: bool) -> None:
        size = self._peer_max_frame
        first, rest = block[:size], block[size:]
        flags = (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS)
        self._out.append(frame(HEADERS, flags, stream_id, first))
        while rest:
            part, rest = rest[:size], rest[size:]
            self._out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, part))

    def _end(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.timer is not None:
            stream.timer.cancel()
        self._send_windows.pop(stream_id, None)
        self.active -= 1
        self._client._released(self)

    def _fail(self, stream_id: int, error: StreamError) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.done.done():
            stream.done.set_exception(error)

    def _reset(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.ended:
            stream.ended = True
            self._out.append(frame(RST_STREAM, 0, stream_id, struct.pack(">I", CANCEL)))
            self._flush()

    def _timed_out(self, stream_id: int) -> None:
        self._fail(stream_id, StreamError("timeout", sent=True))
        self._reset(stream_id)

    # -- what the server sends ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            # We never raise SETTINGS_MAX_FRAME_SIZE: a larger frame breaks the protocol.
            for kind, flags, stream_id, payload in self._frames.feed(data):
                if self._pending is not None and kind != CONTINUATION:
                    raise _ProtocolError("header block interrupted")
                self._onframe(kind, flags, stream_id, payload)
        except (_ProtocolError, ValueError, IndexError, struct.error) as exc:
            code = exc.code if isinstance(exc, _ProtocolError) else COMPRESSION_ERROR
            # last-stream-id 0: we accept no streams from the server
            self._out.append(frame(GOAWAY, 0, 0, struct.pack(">II", 0, code)))
            self._flush()
            self._lost(f"protocol error: {exc}")
            return
        self._flush()

    def _onframe(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == DATA:
            self._received(len(payload))  # padding counts against the window too
            payload = unpadded(flags, payload)
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.body += payload
                if flags & END_STREAM:
                    self._complete(stream)
        elif kind == HEADERS:
            self._pending = (stream_id, flags, bytearray(header_fragment(flags, payload)))
            if flags & END_HEADERS:
                self._header_block()
        elif kind == CONTINUATION:
            if self._pending is None or self._pending[0] != stream_id:
                raise _ProtocolError("CONTINUATION without HEADERS")
            self._pending[2].extend(payload)
            if flags & END_HEADERS:
                self._header_block()
        elif kind == RST_STREAM:
            (code,) = struct.unpack(">I", payload)
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.ended = True
            self._fail(
                stream_id,
                StreamError(f"stream reset: {_code(code)}", sent=code != REFUSED_STREAM),
            )
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == PING:
            if not flags & ACK:
                self._out.append(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self._goaway(last & 0x7FFFFFFF, code)
        elif kind == WINDOW_UPDATE:
            (increment,) = struct.unpack(">I", payload)
            increment &= 0x7FFFFFFF
            if stream_id == 0:
                self._conn_window += increment
            elif stream_id in self._send_windows:
                self._send_windows[stream_id] += increment
            self._window_updated()
        elif kind == PUSH_PROMISE:
            raise _ProtocolError("PUSH_PROMISE with push disabled")
        # PRIORITY and unknown frame types are ignored (§5.5).

    def _header_block(self) -> None:
        assert self._pending is not None
        stream_id, flags, block = self._pending
        self._pending = None
        headers = self._decoder.decode(bytes(block))  # decoded even for a finished stream
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        status = headers.get(b":status")
        if status is not None:
            code = int(status)
            if 100 <= code < 200:
                return  # an interim answer: the final one follows
            stream.headers, stream.status = headers, code
        if flags & END_STREAM:
            self._complete(stream)

    def _complete(self, stream: _Stream) -> None:
        stream.ended = True
        if not stream.done.done():
            stream.done.set_result(Response(stream.status, stream.headers, bytes(stream.body)))

    def _received(self, length: int) -> None:
        # Streams' windows (16 MiB each) outlast any answer; the connection's is topped up.
        self._unacked_in += length
        if self._unacked_in >= _WINDOW // 2:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacked_in)))
            self._unacked_in = 0

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ProtocolError("SETTINGS of a bad length")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack(">HI", payload[i : i + 6])
            if key == S_MAX_CONCURRENT_STREAMS:
                self._max_streams = value
            elif key == S_INITIAL_WINDOW_SIZE:
                delta, self._peer_window = value - self._peer_window, value
                for sid in self._send_windows:
                    self._send_windows[sid] += delta
            elif key == S_MAX_FRAME_SIZE:
                self._peer_max_frame = value
        self._out.append(frame(SETTINGS, ACK, 0))
        if not self.ready.done():
            self.ready.set_result(None)
        self._window_updated()
        self._client._released(self, everyone=True)  # the limit may have risen

    def _goaway(self, last: int, code: int) -> None:
        self.closed = True
        for stream_id in list(self._streams):
            if stream_id > last:
                self._fail(stream_id, StreamError(f"goaway: {_code(code)}", sent=False))
        if not any(stream_id <= last for stream_id in self._streams) and self._transport:
            self._transport.close()

    def _window_updated(self) -> None:
        for waiter in self._window_open.values():
            if not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost("connection lost")

    def _lost(self, reason: str) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(StreamError(reason, sent=False))
        for stream_id in list(self._streams):
            self._fail(stream_id, StreamError(reason, sent=True))
        if self._transport is not None:
            self._transport.close()
        self._client._released(self)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._out.append(frame(GOAWAY, 0, 0, struct.pack(">II", 0, NO_ERROR)))
            self._flush()
            self._transport.close()


def _code(code: int | None) -> str:
    """REFUSED_STREAM, CANCEL...: the name, or the number of a code HTTP/2 does not define."""
    return _CODE_NAMES.get(int(code), str(code)) if code is not None else "-"


class H2Client:
    """HTTP/2 requests to one origin (`https://` with ALPN h2, or `http://` as h2c with
    prior knowledge) over at most `max_connections` connections."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._tls else 80)
        self._authority = parts.netloc.encode()
        self._scheme = parts.scheme.encode()
        self._prefix = parts.path.rstrip("/").encode()
        self._max_connections = max_connections
        self._timeout_s = timeout_s
        self._ssl: ssl.SSLContext | None = None
        if self._tls:
            self._ssl = ssl_context or ssl.create_default_context()
            self._ssl.set_alpn_protocols(["h2"])
        self._connections: list[_Connection] = []
        self._connecting: asyncio.Task[_Connection] | None = None
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def request(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> Response:
        """One request; raises `StreamError` without an answer, ValueError before sending
        a header that cannot be sent."""
        for _, value in headers:
            if _BREAKS_HEADER.search(value):
                raise ValueError("a line break in a header value")
        connection = await self._stream_slot()
        return await connection.request(
            method.encode(),
            self._authority,
            self._scheme,
            self._prefix + path.encode(),
            headers,
            body,
            self._timeout_s,
        )

    async def _stream_slot(self) -> _Connection:
        """A connection with a stream reserved for the caller."""
        while True:
            for connection in self._connections:
                if connection.has_room():
                    connection.active += 1
                    return connection
            if len(self._connections) < self._max_connections:
                if self._connecting is None:
                    self._connecting = asyncio.ensure_future(self._connect())
                connecting = self._connecting
                try:
                    await asyncio.shield(connecting)
                finally:
                    if self._connecting is connecting and connecting.done():
                        self._connecting = None
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._tls else None,
                )
                # Streams wait for the server's SETTINGS: its limit is read, never assumed.
                await connection.ready
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise StreamError(f"connect: {type(exc).__name__}", sent=False) from exc
        self._connections.append(connection)
        self._released(connection, everyone=True)
        return connection

    def _released(self, connection: _Connection, *, everyone: bool = False) -> None:
        """A stream ended, or the connection changed: wake one waiter, or `everyone`."""
        if connection.closed:
            # A closed connection finishes its streams but takes no new ones: make room.
            if connection in self._connections:
                self._connections.remove(connection)
                everyone = True
            if connection.active <= 0:
                connection.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    async def aclose(self) -> None:
        for connection in self._connections:
            connection.close()
        self._connections.clear()


class Endpoint(Protocol):
    """The settings an HTTP/2 provider section has (APNs, FCM)."""

    @property
    def url(self) -> str: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def ca_file(self) -> Path | None: ...


def client(settings: Endpoint) -> H2Client:
    return H2Client(
        settings.url,
        max_connections=settings.max_connections,
        timeout_s=settings.timeout_s,
        ssl_context=ssl_context(settings.ca_file),
    )
