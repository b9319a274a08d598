"""What the HTTP-API providers share: one pooled client, and the status codes every REST
provider uses the same way (429 and 5xx are worth retrying, other 4xx are not)."""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path
from typing import Any

import httpx

from senders.providers.base import (
    NOT_SENT,
    DeliveryError,
    PermanentError,
    RetriableError,
    parse_retry_after,
)


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's CAs, plus `ca_file` when set (a private PKI, a TLS-inspecting proxy,
    the emulators' certificate)."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=str(ca_file))
    return context


# httpcore scans its whole pool on every request, finish and connection change, and counts
# idle connections with a scan inside that scan (O(connections²) per request): at 50
# connections and a few hundred sends in flight, ~4 ms of CPU per request. So the pool
# is split into shards of at most this many connections, and a request enters a shard
# only when one of its connections is free (nothing queues inside httpcore).
SHARD_CONNECTIONS = 8


class _Shard:
    def __init__(self, client: httpx.AsyncClient, size: int) -> None:
        self.client = client
        self.size = size
        self.busy = 0


class PooledClient:
    """An `httpx.AsyncClient` look-alike (`build_request`, `send`, `aclose`) over shards."""

    def __init__(self, shards: list[httpx.AsyncClient], sizes: list[int]) -> None:
        self._shards = [_Shard(c, n) for c, n in zip(shards, sizes, strict=True)]
        self._free = asyncio.Condition()

    def build_request(self, method: str, url: str, **kwargs: Any) -> httpx.Request:
        return self._shards[0].client.build_request(method, url, **kwargs)

    async def send(self, request: httpx.Request) -> httpx.Response:
        shard = min(self._shards, key=lambda s: s.busy / s.size)
        if shard.busy >= shard.size:
            async with self._free:
                await self._free.wait_for(lambda: any(s.busy < s.size for s in self._shards))
            shard = min(self._shards, key=lambda s: s.busy / s.size)
        shard.busy += 1
        try:
            return await shard.client.send(request)
        finally:
            shard.busy -= 1
            async with self._free:
                self._free.notify()

    @property
    def base_url(self) -> httpx.URL:
        return self._shards[0].client.base_url

    @property
    def auth(self) -> httpx.Auth | None:
        return self._shards[0].client.auth

    @property
    def shards(self) -> list[httpx.AsyncClient]:
        return [s.client for s in self._shards]

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.client.aclose()


# What a provider holds: the pooled client, or (in unit tests) a plain one.
Client = httpx.AsyncClient | PooledClient


def client(
    url: str,
    *,
    timeout_s: float,
    max_connections: int,
    ca_file: Path | None = None,
    **kwargs: object,
) -> PooledClient:
    if ca_file:
        kwargs["verify"] = ssl_context(ca_file)
    full, rest = divmod(max(1, max_connections), SHARD_CONNECTIONS)
    sizes = [SHARD_CONNECTIONS] * full + ([rest] if rest else [])
    shards = [
        httpx.AsyncClient(
            base_url=url.rstrip("/"),
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            **kwargs,  # type: ignore[arg-type]
        )
        for n in sizes
    ]
    return PooledClient(shards, sizes)


def transport_error(provider: str, exc: httpx.TransportError) -> RetriableError:
    """No answer: refused or unreachable (not sent), or reset / timed out (maybe taken)."""
    return RetriableError(
        f"{provider}:{type(exc).__name__}",
        provider=provider,
        ambiguous=not isinstance(exc, NOT_SENT),
    )


# A CR or LF would end the header field (HTTP/2 servers drop the whole connection for it).
_BREAKS_HEADER = re.compile(rb"[\r\n\x00]")


async def post(client: Client, provider: str, url: str, **kwargs: Any) -> httpx.Response:
    """POST one request and map a failure to a `DeliveryError`.

    A request that cannot be built (a line break in a header, a malformed URL, a value
    that does not encode) is refused before anything goes on the wire: certainly not sent,
    and permanent, since the same message would fail again."""
    try:
        request = client.build_request("POST", url, **kwargs)
    except (httpx.InvalidURL, ValueError) as exc:
        raise PermanentError(
            f"{provider}:unsendable request", provider=provider, ambiguous=False
        ) from exc
    for name, value in request.headers.raw:
        if _BREAKS_HEADER.search(value):
            raise PermanentError(
                f"{provider}:line break in header {name.decode()}",
                provider=provider,
                ambiguous=False,
            )
    try:
        return await client.send(request)
    except httpx.TransportError as exc:
        raise transport_error(provider, exc) from exc


def status_error(
    provider: str,
    resp: httpx.Response,
    detail: str = "",
    *,
    invalid_address: bool = False,
    retry_after: float | None = None,
) -> DeliveryError:
    status = resp.status_code
    reason = f"{provider}:{status} {detail}".strip()
    if status == 429 or status >= 500:
        wait = parse_retry_after(resp.headers.get("retry-after"))
        return RetriableError(
            reason,
            provider=provider,
            status=status,
            retry_after=wait if wait is not None else retry_after,
        )
    return PermanentError(reason, provider=provider, status=status, invalid_address=invalid_address)
