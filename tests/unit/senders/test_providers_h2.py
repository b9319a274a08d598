"""The HTTP/2 client of the push providers against a scripted h2 server: the server's
SETTINGS_MAX_CONCURRENT_STREAMS is honoured (also when lowered), and each stream failure
says whether the request can have been processed."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from hyperframe.frame import GoAwayFrame

from senders.providers._h2 import H2Client, StreamError
from senders.providers.apns import ApnsProvider
from senders.providers.base import Message, RetriableError
from senders.providers.settings import ApnsSettings

pytestmark = pytest.mark.asyncio


class Server(asyncio.Protocol):
    """Cleartext h2 server; `on_request(server, stream_id)` decides each request's fate."""

    def __init__(self, max_streams: int, on_request: Callable[[Server, int], None]) -> None:
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
        self.on_request = on_request
        self.initial_limit = max_streams
        self.open: set[int] = set()
        self.peak = 0
        self.lowered_to: int | None = None  # acknowledged by the client
        self.peak_after_lowering = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.open.add(event.stream_id)
                self.peak = max(self.peak, len(self.open))
                if self.lowered_to is not None:
                    self.peak_after_lowering = max(self.peak_after_lowering, len(self.open))
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.on_request(self, event.stream_id)
            elif isinstance(event, h2.events.SettingsAcknowledged):
                limit = self.h2.local_settings.max_concurrent_streams
                if limit < self.initial_limit:
                    self.lowered_to = limit
            elif isinstance(event, h2.events.StreamReset):
                self.open.discard(event.stream_id)
        self.flush()

    def answer(self, stream_id: int, status: int = 200, body: bytes = b"") -> None:
        self.open.discard(stream_id)
        self.h2.send_headers(stream_id, [(b":status", str(status).encode())])
        self.h2.send_data(stream_id, body, end_stream=True)
        self.flush()

    def reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        self.open.discard(stream_id)
        self.h2.reset_stream(stream_id, code)
        self.flush()

    def goaway(self, last_stream_id: int) -> None:
        assert self.transport is not None
        self.transport.write(GoAwayFrame(0, last_stream_id=last_stream_id).serialize())


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[int, Callable[[Server, int], None]], object]]:
    servers: list[asyncio.Server] = []

    async def start(
        max_streams: int, on_request: Callable[[Server, int], None]
    ) -> tuple[str, list[Server]]:
        protocols: list[Server] = []

        def factory() -> Server:
            protocols.append(Server(max_streams, on_request))
            return protocols[-1]

        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", protocols

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def later(delay: float, fn: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_later(delay, fn)


async def test_streams_per_connection_never_exceed_the_servers_limit(serve) -> None:  # type: ignore[no-untyped-def]
    url, servers = await serve(5, lambda s, sid: later(0.01, lambda: s.answer(sid)))
    client = H2Client(url, max_connections=2, timeout_s=5)
    try:
        answers = await asyncio.gather(*(client.request("POST", "/", [], b"x") for _ in range(60)))
        assert {a.status for a in answers} == {200}
        assert len(servers) == 2  # a second connection only once the first is full
        assert all(s.peak == 5 for s in servers)
    finally:
        await client.aclose()


async def test_closed_streams_are_dropped_while_the_limit_holds(serve) -> None:  # type: ignore[no-untyped-def]
    # The server's limit holds across 400 streams, and a finished stream leaves nothing
    # behind on the connection.
    url, servers = await serve(5, lambda s, sid: later(0.001, lambda: s.answer(sid)))
    client = H2Client(url, max_connections=1, timeout_s=5)
    try:
        for _ in range(4):
            await asyncio.gather(*(client.request("POST", "/", [], b"x") for _ in range(100)))
        (server,) = servers
        assert server.peak == 5
        (connection,) = client._connections
        assert connection._streams == {} and connection._send_windows == {}
    finally:
        await client.aclose()


async def test_a_lowered_limit_is_honoured_for_new_streams(serve) -> None:  # type: ignore[no-untyped-def]
    def on_request(server: Server, stream_id: int) -> None:
        if stream_id == 1:
            server.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
        later(0.01, lambda: server.answer(stream_id))

    url, servers = await serve(10, on_request)
    client = H2Client(url, max_connections=1, timeout_s=5)
    try:
        await asyncio.gather(*(client.request("POST", "/", [], b"x") for _ in range(40)))
        (server,) = servers
        assert server.lowered_to == 2
        assert 0 < server.peak_after_lowering <= 2
    finally:
        await client.aclose()


async def test_refused_stream_is_not_sent_and_other_resets_are_ambiguous(serve) -> None:  # type: ignore[no-untyped-def]
    codes = {1: h2.errors.ErrorCodes.REFUSED_STREAM, 3: h2.errors.ErrorCodes.INTERNAL_ERROR}
    url, _ = await serve(10, lambda s, sid: s.reset(sid, codes[sid]))
    client = H2Client(url, max_connections=1, timeout_s=5)
    try:
        with pytest.raises(StreamError) as refused:
            await client.request("POST", "/", [], b"x")
        assert refused.value.sent is False
        with pytest.raises(StreamError) as reset:
            await client.request("POST", "/", [], b"x")
        assert reset.value.sent is True
    finally:
        await client.aclose()


async def test_goaway_fails_later_streams_as_not_sent_and_finishes_earlier_ones(serve) -> None:  # type: ignore[no-untyped-def]
    def on_request(server: Server, stream_id: int) -> None:
        if stream_id == 5:  # the third request: GOAWAY, then answer the first two
            server.goaway(last_stream_id=3)
            server.answer(1)
            server.answer(3)

    url, servers = await serve(10, on_request)
    client = H2Client(url, max_connections=1, timeout_s=5)
    try:
        results = await asyncio.gather(
            *(client.request("POST", "/", [], b"x") for _ in range(3)), return_exceptions=True
        )
        assert [getattr(r, "status", None) for r in results[:2]] == [200, 200]
        assert isinstance(results[2], StreamError) and results[2].sent is False
        # The next request goes to a new connection.
        servers_before = len(servers)
        task = asyncio.ensure_future(client.request("POST", "/", [], b"x"))
        await asyncio.sleep(0.1)
        assert len(servers) == servers_before + 1
        servers[-1].answer(1)
        assert (await task).status == 200
    finally:
        await client.aclose()


async def test_timeout_and_lost_connection_are_ambiguous(serve) -> None:  # type: ignore[no-untyped-def]
    def on_request(server: Server, stream_id: int) -> None:
        if stream_id == 3:
            assert server.transport is not None
            server.transport.close()

    url, _ = await serve(10, on_request)
    client = H2Client(url, max_connections=1, timeout_s=0.2)
    try:
        with pytest.raises(StreamError) as timeout:
            await client.request("POST", "/", [], b"x")
        assert (timeout.value.reason, timeout.value.sent) == ("timeout", True)
        with pytest.raises(StreamError) as lost:
            await client.request("POST", "/", [], b"x")
        assert lost.value.sent is True
    finally:
        await client.aclose()


async def test_unreachable_server_is_not_sent() -> None:
    client = H2Client("http://127.0.0.1:9", max_connections=1, timeout_s=2)
    with pytest.raises(StreamError) as err:
        await client.request("POST", "/", [], b"x")
    assert err.value.sent is False


async def test_apns_maps_refused_stream_to_not_sent_and_reset_to_ambiguous(serve) -> None:  # type: ignore[no-untyped-def]
    codes = {1: h2.errors.ErrorCodes.REFUSED_STREAM, 3: h2.errors.ErrorCodes.CANCEL}
    url, _ = await serve(10, lambda s, sid: s.reset(sid, codes[sid]))
    provider = ApnsProvider(ApnsSettings(url=url, ca_file=None))
    await provider.start()
    message = Message(
        delivery_id=str(uuid.uuid4()),
        notification_id=str(uuid.uuid4()),
        channel="push.ios",
        address=secrets.token_hex(32),
        body="hello",
    )
    try:
        with pytest.raises(RetriableError) as refused:
            await provider.send(message)
        assert (refused.value.reason, refused.value.ambiguous) == (
            "apns:stream reset: REFUSED_STREAM",
            False,
        )
        with pytest.raises(RetriableError) as reset:
            await provider.send(message)
        assert reset.value.ambiguous is True
    finally:
        await provider.close()


class _CountingTransport:
    """The connection's transport, counting writes (uvloop's cannot be patched)."""

    def __init__(self, inner: asyncio.Transport) -> None:
        self.inner = inner
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self.inner.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_requests_started_together_leave_in_one_write(serve) -> None:  # type: ignore[no-untyped-def]
    # One write (one TLS record, one syscall) for what a turn of the loop starts, not one
    # per request.
    url, servers = await serve(100, lambda s, sid: s.answer(sid))
    client = H2Client(url, max_connections=1, timeout_s=5)
    try:
        await client.request("POST", "/", [], b"warm-up")  # the connection is open
        connection = client._connections[0]
        assert connection._transport is not None
        counting = _CountingTransport(connection._transport)
        connection._transport = counting  # type: ignore[assignment]
        answers = await asyncio.gather(*(client.request("POST", "/", [], b"x") for _ in range(20)))
        assert [a.status for a in answers] == [200] * 20
        assert len(servers) == 1
        writes = counting.writes
        assert len(writes) <= 2  # the 20 requests' frames together (then acks, if any)
        assert max(writes) > 20 * 9  # twenty HEADERS + DATA frame pairs in one buffer
    finally:
        await client.aclose()
