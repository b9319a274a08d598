"""What the HTTP-API providers share: one pooled client, and the status codes every REST
provider uses the same way (429 and 5xx are worth retrying, other 4xx are not)."""

from __future__ import annotations

import httpx

from senders.providers.base import DeliveryError, PermanentError, RetriableError, parse_retry_after


def client(
    url: str, *, timeout_s: float, max_connections: int, **kwargs: object
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url.rstrip("/"),
        timeout=timeout_s,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        **kwargs,  # type: ignore[arg-type]
    )


# Raised before any byte of the request was sent: the provider cannot have taken it.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def transport_error(provider: str, exc: httpx.TransportError) -> RetriableError:
    """No answer: refused or unreachable (not sent), or reset / timed out (maybe taken)."""
    return RetriableError(
        f"{provider}:{type(exc).__name__}",
        provider=provider,
        ambiguous=not isinstance(exc, NOT_SENT),
    )


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
