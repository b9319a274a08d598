"""What the HTTP-API providers share: one lean HTTP/1.1 client (`_http1`), and the status
codes every REST provider uses the same way (429 and 5xx are worth retrying, other 4xx
are not)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import httpx

from senders.providers._http1 import (
    ConnectFailed,
    HttpError,
    LeanClient,
    Response,
    Unsendable,
)
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


# What a provider holds: the lean client, or (in unit tests) an httpx client with a mock
# transport.
Client = LeanClient | httpx.AsyncClient
AnyResponse = Response | httpx.Response


def client(
    url: str,
    *,
    timeout_s: float,
    max_connections: int,
    ca_file: Path | None = None,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> LeanClient:
    return LeanClient(
        url,
        timeout_s=timeout_s,
        max_connections=max_connections,
        ssl_context=ssl_context(ca_file),
        auth=auth,
        headers=headers,
    )


def transport_error(provider: str, exc: httpx.TransportError) -> RetriableError:
    """No answer: refused or unreachable (not sent), or reset / timed out (maybe taken)."""
    return RetriableError(
        f"{provider}:{type(exc).__name__}",
        provider=provider,
        ambiguous=not isinstance(exc, NOT_SENT),
    )


# A CR or LF would end the header field (HTTP/2 servers drop the whole connection for it).
_BREAKS_HEADER = re.compile(rb"[\r\n\x00]")


async def post(client: Client, provider: str, url: str, **kwargs: Any) -> AnyResponse:
    """POST one request and map a failure to a `DeliveryError`.

    A request that cannot be built (a line break in a header, a malformed URL, a value
    that does not encode) is refused before anything goes on the wire: certainly not sent,
    and permanent, since the same message would fail again."""
    if isinstance(client, LeanClient):
        try:
            return await client.request("POST", url, **kwargs)
        except Unsendable as exc:
            raise PermanentError(
                f"{provider}:unsendable request ({exc})", provider=provider, ambiguous=False
            ) from exc
        except UnicodeEncodeError as exc:  # a header value beyond latin-1
            raise PermanentError(
                f"{provider}:unsendable request (header not latin-1)",
                provider=provider,
                ambiguous=False,
            ) from exc
        except HttpError as exc:
            raise RetriableError(
                f"{provider}:{type(exc).__name__}",
                provider=provider,
                ambiguous=not isinstance(exc, ConnectFailed),
            ) from exc
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
    resp: AnyResponse,
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
