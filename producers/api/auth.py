"""Request plumbing: app key and secret (or HTTP Basic), per-client quotas, JSON bodies
within the size limit, scopes, and errors as JSON bodies (`ApiError`)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from cassandra import DriverException, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from producers.api.intake import Intake
from producers.clients import (
    ApiClient,
    LoginThrottled,
)
from producers.contacts import Directory
from producers.publisher import PublishError
from schemas.errors import HeraldError
from schemas.validation import ValidationError, check_text

log = logging.getLogger(__name__)


CASSANDRA_DOWN = (DriverException, RequestExecutionException, NoHostAvailable)
Handler = Callable[[Request], Awaitable[Response]]


class ApiError(HeraldError):
    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.field = status, error, message, field
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse(body, self.status, headers=self.headers)


def _invalid(err: ValidationError) -> ApiError:
    return ApiError(400, "invalid", err.message, field=err.field)


def _credentials(request: Request) -> tuple[str, str] | None:
    key = request.headers.get("x-herald-app-key")
    secret = request.headers.get("x-herald-app-secret")
    if key and secret:
        return key, secret
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        key, sep, secret = decoded.partition(":")
        if sep and key and secret:
            return key, secret
    return None


async def authenticate(request: Request) -> ApiClient:
    intake: Intake = request.app.state.intake
    creds = _credentials(request)
    challenge = {"WWW-Authenticate": 'Basic realm="herald"'}
    if creds is None:
        raise ApiError(
            401,
            "unauthenticated",
            "send X-Herald-App-Key and X-Herald-App-Secret (or HTTP Basic key:secret)",
            headers=challenge,
        )
    # Behind a proxy this is the proxy's address unless the server trusts its forwarded headers.
    address = request.client.host if request.client else None
    try:
        client = await intake.clients.authenticate(*creds, address=address)
    except LoginThrottled as err:
        retry = str(max(1, math.ceil(err.retry_after)))
        raise ApiError(
            429,
            "rate_limited",
            f"too many failed logins for this app key or address; retry after {retry}s",
            headers={"Retry-After": retry},
        ) from None
    if client is None:
        raise ApiError(401, "unauthenticated", "unknown app key or wrong secret", headers=challenge)
    return client


def charge(request: Request, client: ApiClient, n: int = 1) -> None:
    wait = request.app.state.intake.clients.take(client, n)
    if math.isinf(wait):
        raise ApiError(
            400,
            "invalid",
            f"a batch of {n} exceeds this client's burst of {client.burst}; split it",
            field="notifications",
        )
    if wait > 0:
        retry = str(max(1, math.ceil(wait)))
        raise ApiError(
            429,
            "rate_limited",
            f"quota of client {client.name} exceeded ({client.rate_per_s:g}/s, burst "
            f"{client.burst}); retry after {retry}s",
            headers={"Retry-After": retry},
        )


async def read_json(request: Request) -> Any:
    limit = request.app.state.intake.settings.api.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes", field="body")
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes", field="body")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid", "body is not valid JSON", field="body") from None
    check_text(data)
    return data


async def read_object(request: Request) -> dict[str, Any]:
    """`read_json` of a body that must be a JSON object."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "must be a JSON object", field="body")
    return body


def endpoint(handler: Handler) -> Handler:
    """Authenticate, map errors to JSON bodies. Handlers raise; they never build errors."""

    async def client(request: Request) -> None:
        request.state.client = await authenticate(request)

    return guarded(handler, client)


def guarded(handler: Handler, check: Callable[[Request], Awaitable[None]]) -> Handler:
    """`handler` behind `check` (who may call it), with errors mapped to JSON bodies."""

    async def wrapped(request: Request) -> Response:
        try:
            await check(request)
            return await handler(request)
        except ApiError as err:
            return err.response()
        except ValidationError as err:
            return _invalid(err).response()
        except (PublishError, *CASSANDRA_DOWN) as err:
            log.warning("dependency failed", extra={"error_type": type(err).__name__})
            return ApiError(
                503,
                "unavailable",
                "Kafka or Cassandra did not answer; retry (with the same Idempotency-Key)",
                headers={"Retry-After": "1"},
            ).response()

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def scoped_intake(request: Request, scope: str) -> Intake:
    """Charge the client and require a scope (contacts or templates)."""
    client: ApiClient = request.state.client
    charge(request, client)
    if scope not in client.scopes:
        raise ApiError(403, "forbidden", f"client {client.name} lacks the {scope} scope")
    intake: Intake = request.app.state.intake
    return intake


def contacts_directory(request: Request, scope: str) -> Directory:
    return scoped_intake(request, scope).directory
