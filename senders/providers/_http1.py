"""A lean HTTP/1.1 client for the REST providers (Twilio, Vonage, SendGrid, Web Push).

httpx and httpcore cost ~1.7 ms of CPU per request in a sender under load (cookies, auth
and redirect hooks, header models, a pool scanned on every request); a send needs none of
that. This client keeps persistent connections per origin, writes a request in one
`write`, and reads a response by its Content-Length or its chunks.

Whether a failed request may have reached the provider is kept apart: a connection that
could not be opened (refused, unreachable, TLS handshake, connect timeout) carried
nothing (`ConnectFailed`); a failure after the request was written is ambiguous
(`Broken`, `TimedOut`).
"""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import re
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from schemas.errors import HeraldError

USER_AGENT = b"herald"
_BAD_VALUE = re.compile(r"[\r\n\x00]")


class HttpError(HeraldError):
    """The request got no complete answer."""

    retriable = True


class ConnectFailed(HttpError):
    """No connection: nothing was sent."""


class Broken(HttpError):
    """The connection failed after the request was written (reset, closed, garbled)."""


class TimedOut(HttpError):
    """No complete answer in time after the request was written."""


class Unsendable(HeraldError):
    """The request cannot be written as given (a line break in a header, a bad URL). The
    message ends up in a delivery's reason, so it never quotes the URL: a Web Push
    endpoint carries the subscription's token."""


class Response:
    """Status, headers (names in lower case) and body of one answer."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        # An idle connection the server closed has seen its EOF by now.
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class _Origin:
    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.host_header = host if port in (80, 443) else f"{host}:{port}"
        self.idle: list[_Conn] = []


class LeanClient:
    """Persistent HTTP/1.1 connections, at most `max_connections` in use at once (a request
    beyond that waits for one to come free)."""

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout_s: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._slots = asyncio.Semaphore(max(1, max_connections))
        self._origins: dict[str, _Origin] = {}
        fixed = [(b"User-Agent", USER_AGENT)]
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            fixed.append((b"Authorization", f"Basic {token}".encode("latin-1")))
        for name, value in (headers or {}).items():
            fixed.append((name.encode("latin-1"), _value(name, value)))
        self._fixed = b"".join(b"%s: %s\r\n" % kv for kv in fixed)
        self._closed = False

    # -- one request --------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        origin, target = self._route(url)
        body, content_type = b"", None
        if content is not None:
            body = content
        elif data is not None:
            body, content_type = urlencode(data).encode(), "application/x-www-form-urlencoded"
        elif json is not None:
            body = jsonlib.dumps(json, separators=(",", ":")).encode()
            content_type = "application/json"
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n".encode("ascii")]
        lines.append(self._fixed)
        given = {k.lower() for k in headers or ()}
        if content_type is not None and "content-type" not in given:
            lines.append(b"Content-Type: %s\r\n" % content_type.encode())
        for name, value in (headers or {}).items():
            lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), _value(name, value)))
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        head = b"".join(lines)
        async with self._slots:
            conn = await self._connection(origin)
            reuse = False
            try:
                reuse, resp = await self._exchange(conn, head + body, method)
                return resp
            finally:
                if reuse and not self._closed:
                    origin.idle.append(conn)
                else:
                    conn.close()

    def _route(self, url: str) -> tuple[_Origin, str]:
        full = url if "://" in url else f"{self.base_url}{url}"
        try:
            parts = urlsplit(full)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise Unsendable("bad URL") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unsendable(f"bad URL scheme {parts.scheme!r}" if parts.hostname else "bad URL")
        if _BAD_VALUE.search(full) or " " in full:
            raise Unsendable("line break or space in the URL")
        key = f"{parts.scheme}://{parts.hostname}:{port}"
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(parts.scheme, parts.hostname, port)
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        return origin, target

    async def _connection(self, origin: _Origin) -> _Conn:
        while origin.idle:
            conn = origin.idle.pop()
            if conn.usable():
                return conn
            conn.close()
        tls = origin.scheme == "https"
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(
                    origin.host,
                    origin.port,
                    ssl=self.ssl_context if tls else None,
                    server_hostname=origin.host if tls else None,
                    limit=1 << 20,
                )
        except TimeoutError as exc:
            raise ConnectFailed(f"connect timeout ({self.timeout_s:g} s)") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, request: bytes, method: str) -> tuple[bool, Response]:
        """(keep the connection, the answer)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                conn.writer.write(request)
                head = await conn.reader.readuntil(b"\r\n\r\n")
                status, headers = _parse_head(head)
                body, reusable = await _read_body(conn.reader, headers, status, method)
        except TimeoutError as exc:
            raise TimedOut(f"no answer in {self.timeout_s:g} s") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise Broken(f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:
            raise Broken(f"malformed answer: {exc}") from exc
        if headers.get("connection", "").lower() == "close":
            reusable = False
        return reusable, Response(status, headers, body)

    async def aclose(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()


def _value(name: str, value: str) -> bytes:
    if _BAD_VALUE.search(value) or _BAD_VALUE.search(name):
        raise Unsendable(f"line break in header {name}")
    return value.encode("latin-1", "strict")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"status line {lines[0][:40]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"header line {line[:40]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return status, headers


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], status: int, method: str
) -> tuple[bytes, bool]:
    """(body, whether the connection can carry another request)."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b"", True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts), True
            parts.append((await reader.readexactly(size + 2))[:-2])
    if (length := headers.get("content-length")) is not None:
        return await reader.readexactly(int(length)), True
    return await reader.read(), False  # delimited by the connection's end
