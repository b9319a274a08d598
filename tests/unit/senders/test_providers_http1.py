"""The REST providers' lean HTTP/1.1 client against a local server: what it writes, how it
reads (length, chunks, end of connection), connections kept and bounded, and whether a
failure may have reached the provider."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from senders.providers import _http
from senders.providers._http1 import Broken, ConnectFailed, LeanClient, TimedOut, Unsendable
from senders.providers.base import PermanentError, RetriableError

Answer = Callable[[bytes, bytes], Awaitable[bytes | None]]  # (head, body) → raw answer


@dataclass
class Server:
    port: int
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0
    in_flight: int = 0
    peak: int = 0


async def _serve(answer: Answer) -> tuple[Server, asyncio.Server]:
    state = Server(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                state.requests.append((head, body))
                state.in_flight += 1
                state.peak = max(state.peak, state.in_flight)
                raw = await answer(head, body)
                state.in_flight -= 1
                if raw is None:  # drop the connection without answering
                    writer.transport.abort()
                    return
                writer.write(raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    return state, server


def _ok(body: bytes = b'{"sid":"SM1"}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
async def served() -> AsyncIterator[Callable[[Answer], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> Server:
        state, server = await _serve(answer)
        servers.append(server)
        return state

    yield start
    for s in servers:
        s.close()


async def test_a_form_post_with_basic_auth_and_keep_alive(served: Callable[..., Any]) -> None:
    async def answer(_head: bytes, _body: bytes) -> bytes:
        return _ok()

    server = await served(answer)
    client = LeanClient(
        f"http://127.0.0.1:{server.port}/", timeout_s=5, max_connections=4, auth=("AC1", "tok")
    )
    for n in range(3):
        resp = await client.request(
            "POST", "/2010-04-01/Messages.json", data={"To": "+1 555", "Body": f"hi {n}&"}
        )
        assert resp.status_code == 201 and resp.json() == {"sid": "SM1"}
    await client.aclose()
    head, body = server.requests[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /2010-04-01/Messages.json HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert "Authorization: Basic " + base64.b64encode(b"AC1:tok").decode() in lines
    assert "Content-Type: application/x-www-form-urlencoded" in lines
    assert body == b"To=%2B1+555&Body=hi+0%26"
    assert server.connections == 1  # one connection carried all three


async def test_json_body_chunked_answer_and_headers_in_lower_case(
    served: Callable[..., Any],
) -> None:
    async def answer(_head: bytes, body: bytes) -> bytes:
        out = json.dumps({"echo": json.loads(body)}).encode()
        half = len(out) // 2
        chunks = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (
            half,
            out[:half],
            len(out) - half,
            out[half:],
        )
        return (
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nX-Message-Id: m-1\r\n"
            b"X-Multi: a\r\nX-Multi: b\r\n\r\n" + chunks
        )

    server = await served(answer)
    client = LeanClient(f"http://127.0.0.1:{server.port}", timeout_s=5, max_connections=1)
    resp = await client.request("POST", "/v3/mail/send", json={"a": [1, "é"]})
    again = await client.request("POST", "/v3/mail/send", json={"b": 2})
    await client.aclose()
    assert resp.status_code == 202 and resp.json() == {"echo": {"a": [1, "é"]}}
    assert resp.headers["x-message-id"] == "m-1" and resp.headers["x-multi"] == "a, b"
    assert again.json() == {"echo": {"b": 2}}
    assert server.connections == 1  # the chunked answer was read to its end
    assert b"Content-Type: application/json" in server.requests[0][0]


async def test_an_answer_ended_by_the_connection_closes_it(served: Callable[..., Any]) -> None:
    async def answer(_head: bytes, _body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    server = await served(answer)
    client = LeanClient(f"http://127.0.0.1:{server.port}", timeout_s=5, max_connections=2)
    assert (await client.request("POST", "/a", content=b"x")).text == "ok"
    assert (await client.request("POST", "/a", content=b"x")).text == "ok"
    await client.aclose()
    assert server.connections == 2


async def test_never_more_requests_than_connections(served: Callable[..., Any]) -> None:
    async def answer(_head: bytes, body: bytes) -> bytes:
        await asyncio.sleep(0.005)
        return _ok(body)

    server = await served(answer)
    client = LeanClient(f"http://127.0.0.1:{server.port}", timeout_s=5, max_connections=5)
    answers = await asyncio.gather(
        *(client.request("POST", "/s", content=str(n).encode()) for n in range(100))
    )
    await client.aclose()
    assert [a.content for a in answers] == [str(n).encode() for n in range(100)]
    assert server.peak == 5 and server.connections == 5


async def test_an_absolute_url_goes_to_its_own_origin(served: Callable[..., Any]) -> None:
    async def answer(_head: bytes, _body: bytes) -> bytes:
        return b"HTTP/1.1 201 Created\r\nLocation: /m/1\r\nContent-Length: 0\r\n\r\n"

    server = await served(answer)
    client = LeanClient("", timeout_s=5, max_connections=2)
    resp = await client.request("POST", f"http://127.0.0.1:{server.port}/push/abc?x=1")
    await client.aclose()
    assert resp.headers["location"] == "/m/1"
    assert server.requests[0][0].startswith(b"POST /push/abc?x=1 HTTP/1.1\r\n")


async def test_failures_say_whether_anything_was_sent(served: Callable[..., Any]) -> None:
    async def silent(_head: bytes, _body: bytes) -> bytes:
        await asyncio.sleep(10)
        return _ok()

    async def dropped(_head: bytes, _body: bytes) -> None:
        return None

    nobody = LeanClient("http://127.0.0.1:9", timeout_s=2, max_connections=1)
    with pytest.raises(ConnectFailed):
        await nobody.request("POST", "/x")
    slow = await served(silent)
    with pytest.raises(TimedOut):
        await LeanClient(f"http://127.0.0.1:{slow.port}", timeout_s=0.3, max_connections=1).request(
            "POST", "/x"
        )
    gone = await served(dropped)
    with pytest.raises(Broken):
        await LeanClient(f"http://127.0.0.1:{gone.port}", timeout_s=2, max_connections=1).request(
            "POST", "/x"
        )
    # Mapped by the providers' `post`: only the refused connection is certainly not sent.
    for port, ambiguous in ((9, False), (slow.port, True), (gone.port, True)):
        client = LeanClient(f"http://127.0.0.1:{port}", timeout_s=0.3, max_connections=1)
        with pytest.raises(RetriableError) as err:
            await _http.post(client, "twilio", "/x", data={"a": "b"})
        assert err.value.ambiguous is ambiguous


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/x", {"X-Herald-Delivery-Id": "d\r\nInjected: 1"}),
        ("/x\r\nInjected: 1", {}),
        ("ftp://h/x", {}),
    ],
)
async def test_an_unsendable_request_is_refused_before_the_wire(
    url: str, headers: dict[str, str]
) -> None:
    client = LeanClient("http://127.0.0.1:9", timeout_s=1, max_connections=1)
    with pytest.raises(Unsendable):
        await client.request("POST", url, headers=headers)
    with pytest.raises(PermanentError) as err:
        await _http.post(client, "twilio", url, headers=headers)
    assert err.value.ambiguous is False


async def test_a_refusal_names_the_problem_never_the_url() -> None:
    client = LeanClient("", timeout_s=1, max_connections=1)
    secret = "https://push.example/wpush/v2/SECRETTOKEN\r\nX: 1"
    with pytest.raises(PermanentError) as err:
        await _http.post(client, "webpush", secret)
    assert "SECRETTOKEN" not in err.value.reason and "unsendable" in err.value.reason
    with pytest.raises(PermanentError) as err:
        await _http.post(client, "webpush", "https://push.example/x", headers={"TTL": "é✓"})
    assert err.value.reason == "webpush:unsendable request (header not latin-1)"
