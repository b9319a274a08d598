"""The REST providers' pooled client: shards of at most SHARD_CONNECTIONS connections,
never more requests in a shard than its connections, every request answered."""

from __future__ import annotations

import asyncio

import httpx

from senders.providers import _http


async def test_requests_beyond_the_connections_wait_outside_httpx() -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return httpx.Response(201, json={"sid": request.headers["x-n"]})

    client = _http.client(
        "http://provider.test",
        timeout_s=5,
        max_connections=20,
        transport=httpx.MockTransport(handler),
    )
    assert len(client.shards) == 3  # 8 + 8 + 4
    busy_seen: list[int] = []

    async def one(n: int) -> str:
        resp = await _http.post(client, "p", "/send", headers={"x-n": str(n)})
        busy_seen.append(max(s.busy for s in client._shards))
        return str(resp.json()["sid"])

    answers = await asyncio.gather(*(one(n) for n in range(300)))
    await client.aclose()
    assert answers == [str(n) for n in range(300)]
    assert peak == 20  # every connection used, never more requests than connections
    assert max(busy_seen) <= _http.SHARD_CONNECTIONS


async def test_one_connection_makes_one_shard() -> None:
    client = _http.client("http://provider.test", timeout_s=5, max_connections=1)
    assert len(client.shards) == 1
    await client.aclose()
