"""A lean HTTP/2 client for the push providers: many streams on few connections.

httpx/httpcore cost milliseconds of CPU per request at a few hundred concurrent streams
and fold every stream failure into one `RemoteProtocolError`, losing what HTTP/2 says
about whether the server can have processed a request. This client speaks HTTP/2 through
`h2` on an asyncio protocol and keeps that per stream (RFC 9113 §8.7):

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

from schemas.errors import HeraldError
from senders.providers._http import ssl_context

# Inbound flow-control windows: answers are small, so the server never waits on us.
_WINDOW = 1 << 24
# Stop opening streams on a connection this close to running out of stream ids (2^31).
_LAST_STREAM_ID = (1 << 31) - 1024
# h2 counts a connection's open streams by walking every stream it still holds, once per
# new stream; the client keeps its own count against the server's limit, so the walk (which
# also drops closed streams) runs once per this many new streams.
_SWEEP_EVERY = 64
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
    __slots__ = ("body", "done", "headers", "status", "timer")

    def __init__(self, done: asyncio.Future[Response]) -> None:
        self.done = done
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.timer: asyncio.TimerHandle | None = None


class _Encoder(hpack.Encoder):
    """Header values as literal octets, not Huffman-coded: hpack's pure-Python Huffman
    coder cost more client CPU than any other step of a push request, to save a few
    dozen bytes of each request's headers."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=huffman)


class _Draining(h2.connection.H2Connection):
    """h2 closes its state machine on GOAWAY and would then refuse the frames that still
    answer the streams at or below last-stream-id, which the server promises to finish
    (RFC 9113 §6.8): stay open to read them (`_Connection.closed` opens no new stream).

    Also the two cuts of client CPU: `_Encoder`, and h2's own open-stream count only every
    `_SWEEP_EVERY` new streams (`_Connection.active` is what keeps the server's limit)."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self.encoder = _Encoder()
        self._new_streams = 0

    @property
    def open_outbound_streams(self) -> int:
        self._new_streams += 1
        if self._new_streams % _SWEEP_EVERY:
            return 0
        # never more than `_Connection.active`: a stream closes before its slot is freed
        return int(super().open_outbound_streams)

    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        state = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        self.state_machine.state = state
        return frames, events


class _Connection(asyncio.Protocol):
    def __init__(self, client: H2Client) -> None:
        self._client = client
        self._h2 = _Draining(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                # Our own headers are lowercase and checked for line breaks in `request`.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._window_open: dict[int, asyncio.Future[None]] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.active = 0  # streams opened or reserved on this connection
        self.closed = False  # no new streams: GOAWAY received, lost, or out of stream ids

    # The server's limit, as of its latest SETTINGS frame.
    @property
    def max_streams(self) -> int:
        return int(self._h2.remote_settings.max_concurrent_streams)

    def has_room(self) -> bool:
        return not self.closed and self.ready.done() and self.active < self.max_streams

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_WINDOW)
        self._flush()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
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
        stream_id = self._h2.get_next_available_stream_id()
        if stream_id >= _LAST_STREAM_ID:
            self.closed = True
        stream = _Stream(loop.create_future())
        self._streams[stream_id] = stream
        try:
            stream.timer = loop.call_later(timeout_s, self._timed_out, stream_id)
            self._h2.send_headers(
                stream_id,
                [
                    (b":method", method),
                    (b":authority", authority),
                    (b":scheme", scheme),
                    (b":path", path),
                    *headers,
                ],
                end_stream=not body,
            )
            # Headers and the first DATA frames leave in one write (one syscall).
            view = memoryview(body)
            while view:
                window = min(
                    self._h2.local_flow_control_window(stream_id),
                    self._h2.max_outbound_frame_size,
                )
                if window <= 0:
                    self._flush()
                    waiter = self._window_open[stream_id] = loop.create_future()
                    await asyncio.wait((waiter, stream.done), return_when=asyncio.FIRST_COMPLETED)
                    self._window_open.pop(stream_id, None)
                    if stream.done.done():
                        break
                    continue
                chunk, view = view[:window], view[window:]
                self._h2.send_data(stream_id, chunk.tobytes(), end_stream=not view)
            self._flush()
            return await stream.done
        except asyncio.CancelledError:
            self._reset(stream_id)
            raise
        finally:
            self._end(stream_id)

    def _end(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.timer is not None:
            stream.timer.cancel()
        self.active -= 1
        self._client._released(self)

    def _fail(self, stream_id: int, error: StreamError) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.done.done():
            stream.done.set_exception(error)

    def _reset(self, stream_id: int) -> None:
        try:
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._flush()
        except h2.exceptions.H2Error:
            pass  # the stream already ended

    def _timed_out(self, stream_id: int) -> None:
        self._fail(stream_id, StreamError("timeout", sent=True))
        self._reset(stream_id)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._flush()  # h2 queued a GOAWAY
            self._lost(f"protocol error: {type(exc).__name__}")
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.body += event.data
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.ResponseReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.headers = dict(event.headers)
                    stream.status = int(stream.headers.get(b":status", b"0"))
            elif isinstance(event, h2.events.StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None and not stream.done.done():
                    stream.done.set_result(
                        Response(stream.status, stream.headers, bytes(stream.body))
                    )
            elif isinstance(event, h2.events.StreamReset):
                refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                self._fail(
                    event.stream_id,
                    StreamError(f"stream reset: {_code(event.error_code)}", sent=not refused),
                )
            elif isinstance(event, h2.events.WindowUpdated):
                self._window_updated()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                if not self.ready.done():
                    self.ready.set_result(None)
                self._client._released(self, everyone=True)  # the limit may have risen
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._goaway(event)
        self._flush()

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.closed = True
        last = event.last_stream_id or 0
        for stream_id in list(self._streams):
            if stream_id > last:
                self._fail(stream_id, StreamError(f"goaway: {_code(event.error_code)}", sent=False))
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
            self._h2.close_connection()
            self._flush()
            self._transport.close()


_CODE_NAMES = {code.value: code.name for code in h2.errors.ErrorCodes}


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
