"""The send API (the seed's "notification server"): an ASGI app, run by `python -m producers api`.

Every route but `/healthz`, `/openapi.json` and the public pages (`producers.pages`: signed
links and provider webhooks) needs an API client's app key and secret,
as `X-Herald-App-Key` + `X-Herald-App-Secret` headers or HTTP Basic. Errors are JSON
`{"error": <code>, "message": ..., "field": ...}`:

- 400 `invalid`: the input; `field` names it (`[2].user_id` inside a batch).
- 401 `unauthenticated`: missing or wrong key/secret. 403 `forbidden`: this client may not
  send as that source or that category, or lacks the `contacts:read`/`contacts:write` scope.
- 404 `not_found`: also for another client's notification, so none learns of another's.
- 409 `idempotency_key_reused`: this client already used the `Idempotency-Key` with another
  body (within 7 days).
- 413 `too_large`: the body. 429 `rate_limited` with `Retry-After` (seconds).
- 503 `unavailable` with `Retry-After`: Kafka or Cassandra did not answer; retry the same
  request (same `Idempotency-Key`), nothing is sent twice.

`POST /v1/notifications` answers 202 once the request is durably on Kafka (acks=all):
accepted for processing, not yet delivered. Event ids are `<client_id>:<Idempotency-Key>`
(or `<client_id>:<uuid>`), so keys are per client and the processor's dedup by event id
never lets one client's request suppress another's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from cassandra import DriverException, RequestExecutionException
from cassandra.cluster import NoHostAvailable, Session
from jinja2 import TemplateError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.cache import TTLCache
from infra.cassandra import aexecute, connect
from infra.inbox import BadCursor, InboxStore, State
from infra.links import BadLink
from producers import inbox
from producers.clients import (
    CONTACTS_READ,
    CONTACTS_WRITE,
    INBOX_READ,
    INBOX_TOKEN,
    INBOX_WRITE,
    TEMPLATES_READ,
    TEMPLATES_WRITE,
    ApiClient,
    ClientStore,
    LoginThrottled,
)
from producers.contacts import UNSET, Directory
from producers.headers import HeaderParams
from producers.idempotency import Claim, IdempotencyKeys, fingerprint
from producers.openapi import openapi_document
from producers.pages import (
    preferences_page,
    save_preferences,
    sms_inbound,
    unsubscribe,
    unsubscribe_page,
)
from producers.publisher import AsyncPublisher, Prepared, PublishError
from producers.request import NotificationRequest, parse_request
from producers.schedules import RecurringStore
from producers.settings import IntakeSettings
from producers.templates import Conflict, TemplateStore, preview, split_ref
from schemas.contract import Topics
from schemas.errors import HeraldError
from schemas.ids import notification_id
from schemas.validation import ValidationError, check_header_value, check_text, has_line_break

log = logging.getLogger(__name__)

USER_FIELDS = ("email", "phone", "locale", "timezone", "quiet_hours")
_CASSANDRA_DOWN = (DriverException, RequestExecutionException, NoHostAvailable)
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


class Intake:
    """What the API needs, started once per process (or by a test)."""

    def __init__(self, settings: IntakeSettings) -> None:
        self.settings = settings
        self.session: Session | None = None
        self.publisher: AsyncPublisher | None = None

    async def start(self) -> None:
        s = self.settings
        session = await asyncio.to_thread(connect, s.cassandra)
        self.session = session
        self.publisher = AsyncPublisher(s.kafka, **s.publisher_args("send-api"))
        self.publisher.start()
        self.clients = ClientStore(
            session,
            cache_ttl_s=s.api.cache_ttl_s,
            failed_logins_burst=s.api.failed_logins_burst,
            failed_logins_per_minute=s.api.failed_logins_per_minute,
        )
        self.directory = Directory(
            session,
            self.publisher,
            hmac_key=s.contacts.hmac_key.get_secret_value().encode(),
            phone_region=s.contacts.phone_region,
        )
        self.schedules = RecurringStore(session)
        self.templates = TemplateStore(session, self.publisher)
        self.idempotency = IdempotencyKeys(session)
        # Positive lookups remembered for a while: known users and templates are the norm.
        self.known_users: TTLCache[bool] = TTLCache(100_000, s.api.cache_ttl_s)
        self.known_templates: TTLCache[bool] = TTLCache(100_000, s.api.cache_ttl_s)
        self.header_params = HeaderParams(session, ttl_s=s.api.cache_ttl_s)
        self._user = session.prepare("SELECT user_id FROM users WHERE user_id = ?")
        self._template = session.prepare(
            "SELECT template_id FROM templates WHERE template_id = ? LIMIT 1"
        )
        self._log = session.prepare(
            "SELECT delivery_id, channel, state, reason, attempt, provider, updated_at"
            " FROM notification_log WHERE notification_id = ?"
        )
        self.held = _schedule_store(session, Topics(s.topic_prefix).requested)
        self.inbox = InboxStore(session, s.inbox)

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
        if self.session is not None:
            self.session.cluster.shutdown()

    async def user_exists(self, user_id: str) -> bool:
        if user_id in self.known_users:
            return True
        assert self.session is not None
        found = bool(await aexecute(self.session, self._user, (user_id,)))
        if found:
            self.known_users.put(user_id, True)
        return found

    async def deliveries(self, notification_id: str) -> list[dict[str, Any]]:
        assert self.session is not None
        return await aexecute(self.session, self._log, (notification_id,))

    async def template_exists(self, template_id: str) -> bool:
        if template_id in self.known_templates:
            return True
        assert self.session is not None
        found = bool(await aexecute(self.session, self._template, (template_id,)))
        if found:
            self.known_templates.put(template_id, True)
        return found


def _schedule_store(session: Session, scope: str) -> Any:
    """The processor's hold store, for cancelling a scheduled send (absent in old installs)."""
    try:
        from infra.scheduling import ScheduleStore
    except ImportError:
        return None
    return ScheduleStore(session, scope)


# --- request plumbing -------------------------------------------------------------


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


async def _authenticate(request: Request) -> ApiClient:
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


def _charge(request: Request, client: ApiClient, n: int = 1) -> None:
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


async def _json(request: Request) -> Any:
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


def endpoint(handler: Handler) -> Handler:
    """Authenticate, map errors to JSON bodies. Handlers raise; they never build errors."""

    async def client(request: Request) -> None:
        request.state.client = await _authenticate(request)

    return _guarded(handler, client)


def _guarded(handler: Handler, authenticate: Callable[[Request], Awaitable[None]]) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            await authenticate(request)
            return await handler(request)
        except ApiError as err:
            return err.response()
        except ValidationError as err:
            return _invalid(err).response()
        except (PublishError, *_CASSANDRA_DOWN) as err:
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


# --- notifications ----------------------------------------------------------------


async def _check_references(
    intake: Intake, requests: list[NotificationRequest], batch: bool
) -> None:
    """Unknown templates and users are 400s; each distinct one is looked up once, all
    concurrently, so a large batch costs one round trip rather than one per item."""
    api = intake.settings.api
    templates = (
        {t for r in requests for t in (r.template_id, r.digest and r.digest.template_id) if t}
        if api.check_templates
        else set()
    )
    users = {r.user_id for r in requests} if api.check_users else set()
    t_found, u_found = await asyncio.gather(
        asyncio.gather(*(intake.template_exists(t) for t in templates)),
        asyncio.gather(*(intake.user_exists(u) for u in users)),
    )
    known_templates = {t for t, ok in zip(templates, t_found, strict=True) if ok}
    known_users = {u for u, ok in zip(users, u_found, strict=True) if ok}
    for i, req in enumerate(requests):
        prefix = f"notifications[{i}]." if batch else ""
        if req.template_id and api.check_templates and req.template_id not in known_templates:
            raise ApiError(400, "invalid", "unknown template", field=f"{prefix}template_id")
        digest_template = req.digest.template_id if req.digest else None
        if digest_template and api.check_templates and digest_template not in known_templates:
            raise ApiError(400, "invalid", "unknown template", field=f"{prefix}digest.template_id")
        if api.check_users and req.user_id not in known_users:
            raise ApiError(400, "invalid", "unknown user", field=f"{prefix}user_id")
    await _check_header_params(intake, requests if api.check_templates else [], batch)


async def _check_header_params(
    intake: Intake, requests: list[NotificationRequest], batch: bool
) -> None:
    """A parameter with a line break is refused if its template puts it in a subject or
    title; only the templates of requests with such a parameter are looked up."""
    suspects = {
        i: r
        for i, r in enumerate(requests)
        if r.template_id and any(map(has_line_break, r.params.values()))
    }
    templates = sorted({r.template_id or "" for r in suspects.values()})
    used = await asyncio.gather(*(intake.header_params.of(t) for t in templates))
    header_bound = dict(zip(templates, used, strict=True))
    for i, req in suspects.items():
        prefix = f"notifications[{i}]." if batch else ""
        for name in sorted(header_bound[req.template_id or ""] & req.params.keys()):
            check_header_value(req.params[name], f"{prefix}params.{name}")


@endpoint
async def send_notifications(request: Request) -> Response:
    """Publish one request (a JSON object) or a batch (`{"notifications": [...]}`)."""
    intake: Intake = request.app.state.intake
    client: ApiClient = request.state.client
    body = await _json(request)
    batch = isinstance(body, dict) and "notifications" in body
    items = body["notifications"] if batch else [body]
    if not isinstance(items, list) or not items:
        raise ApiError(400, "invalid", "must be a non-empty array", field="notifications")
    if len(items) > intake.settings.api.max_batch:
        raise ApiError(
            400,
            "invalid",
            f"at most {intake.settings.api.max_batch} per batch",
            field="notifications",
        )
    _charge(request, client, len(items))

    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 180:
        raise ApiError(400, "invalid", "1-180 characters", field="Idempotency-Key")
    requests: list[NotificationRequest] = []
    prepared: list[Prepared] = []
    for i, item in enumerate(items):
        prefix = f"notifications[{i}]." if batch else ""
        if isinstance(item, dict) and "event_id" in item:
            raise ApiError(
                400,
                "invalid",
                "set by the API: send your idempotency key as the Idempotency-Key header",
                field=f"{prefix}event_id",
            )
        local = (f"{key}:{i}" if batch else key) if key is not None else str(uuid.uuid4())
        defaults = {"source": client.name, "event_id": f"{client.client_id}:{local}"}
        req = parse_request(item, prefix, **defaults)
        if not client.may_send_as(req.source):
            raise ApiError(
                403,
                "forbidden",
                f"client {client.name} may not send as source {req.source!r}",
                field=f"{prefix}source",
            )
        if not client.may_send(req.category):
            raise ApiError(
                403,
                "forbidden",
                f"client {client.name} may not send category {req.category!r}",
                field=f"{prefix}category",
            )
        assert intake.publisher is not None
        try:
            prepared.append(intake.publisher.prepare(req))
        except ValidationError as err:
            raise ValidationError(f"{prefix}{err.field}", err.message) from None
        requests.append(req)
    await _check_references(intake, requests, batch)

    claim = Claim.NEW
    if key is not None:
        claim = await intake.idempotency.claim(client.client_id, key, fingerprint(body))
        if claim is Claim.CONFLICT:
            raise ApiError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different body; "
                "use a new key for a new request",
                field="Idempotency-Key",
            )
    # A replay is published again: after a 503 the first attempt may never have reached
    # Kafka, and if it did the processor drops the repeated event id.
    assert intake.publisher is not None
    results = await intake.publisher.publish_prepared(prepared)
    failed = [r for r in results if not r.ok]
    if failed:
        raise PublishError(failed[0].error or "not delivered", retriable=failed[0].retriable)
    accepted = [
        {
            "event_id": r.event_id,
            "notification_id": r.notification_id,
            "send_at": q.send_at.isoformat() if q.send_at else None,
        }
        for r, q in zip(results, requests, strict=True)
    ]
    headers = {"Idempotent-Replayed": "true"} if claim is Claim.REPLAY else None
    return JSONResponse({"notifications": accepted} if batch else accepted[0], 202, headers)


def _own_event_id(request: Request) -> str:
    """The path's event id, if it is one of this client's requests. Another client's is
    404 like an unknown one: the event id prefix alone decides, no lookup reveals anything."""
    client: ApiClient = request.state.client
    event_id: str = request.path_params["event_id"]
    if not event_id.startswith(f"{client.client_id}:"):
        raise ApiError(
            404, "not_found", "no notification with this event id for this client", field="event_id"
        )
    return event_id


@endpoint
async def get_notification(request: Request) -> Response:
    """What happened so far: the hold state of a scheduled request and each delivery's
    latest state from the notification log. Empty deliveries: not fanned out yet."""
    _charge(request, request.state.client)
    intake: Intake = request.app.state.intake
    event_id = _own_event_id(request)
    nid = notification_id(event_id)
    rows = await intake.deliveries(nid)
    held = await intake.held.state(event_id) if intake.held is not None else None
    deliveries = [
        {
            "delivery_id": r["delivery_id"],
            "channel": r["channel"],
            "state": r["state"],
            "reason": r["reason"],
            "attempt": r["attempt"],
            "provider": r["provider"],
            "updated_at": r["updated_at"].isoformat() if r["updated_at"] else None,
        }
        for r in rows
    ]
    return JSONResponse(
        {"event_id": event_id, "notification_id": nid, "scheduled": held, "deliveries": deliveries}
    )


@endpoint
async def cancel_notification(request: Request) -> Response:
    """Cancel a scheduled request (send_at in the future) before it is released."""
    _charge(request, request.state.client)
    intake: Intake = request.app.state.intake
    event_id = _own_event_id(request)
    if intake.held is None:
        raise ApiError(501, "not_implemented", "scheduled sends are not enabled")
    if await intake.held.acancel(event_id):
        return JSONResponse({"event_id": event_id, "canceled": True})
    state = await intake.held.state(event_id)
    if state is None:
        raise ApiError(
            404,
            "not_found",
            "no scheduled request with this event id (unknown, or not held yet: retry shortly)",
            field="event_id",
        )
    raise ApiError(409, "conflict", f"cannot cancel: the request is {state}", field="event_id")


# --- contacts ---------------------------------------------------------------------


def _scoped(request: Request, scope: str) -> Intake:
    """Charge the client and require a scope (contacts or templates)."""
    client: ApiClient = request.state.client
    _charge(request, client)
    if scope not in client.scopes:
        raise ApiError(403, "forbidden", f"client {client.name} lacks the {scope} scope")
    intake: Intake = request.app.state.intake
    return intake


def _directory(request: Request, scope: str) -> Directory:
    return _scoped(request, scope).directory


@endpoint
async def get_user(request: Request) -> Response:
    """A user's contacts, devices (without tokens) and preferences."""
    user = await _directory(request, CONTACTS_READ).get_user(request.path_params["user_id"])
    if user is None:
        raise ApiError(404, "not_found", "unknown user", field="user_id")
    return JSONResponse(user)


@endpoint
async def put_user(request: Request) -> Response:
    """Create or update a user; fields left out are unchanged, null clears one."""
    directory = _directory(request, CONTACTS_WRITE)
    body = await _json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "must be a JSON object", field="body")
    unknown = set(body) - {*USER_FIELDS, "unsubscribed_all"}
    if unknown:
        raise ApiError(400, "invalid", "unknown field", field=sorted(unknown)[0])
    changes = {name: body.get(name, UNSET) for name in (*USER_FIELDS, "unsubscribed_all")}
    if changes["unsubscribed_all"] is None:
        changes["unsubscribed_all"] = UNSET
    stored = await directory.set_user(request.path_params["user_id"], **changes)
    return JSONResponse({"user_id": request.path_params["user_id"], **stored})


@endpoint
async def delete_user(request: Request) -> Response:
    """Forget a user: contacts, devices and preferences."""
    if not await _directory(request, CONTACTS_WRITE).delete_user(request.path_params["user_id"]):
        raise ApiError(404, "not_found", "unknown user", field="user_id")
    return Response(status_code=204)


@endpoint
async def delete_user_field(request: Request) -> Response:
    """Clear one of email, phone, locale, timezone, quiet_hours."""
    directory = _directory(request, CONTACTS_WRITE)
    name = request.path_params["field"]
    if name not in USER_FIELDS:
        raise ApiError(404, "not_found", f"no user field {name!r}", field="field")
    cleared: dict[str, Any] = {name: None}
    await directory.set_user(request.path_params["user_id"], **cleared)
    return Response(status_code=204)


@endpoint
async def register_device(request: Request) -> Response:
    """Register a device (ios, android, web) with its token and app id."""
    directory = _directory(request, CONTACTS_WRITE)
    body = await _json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "must be a JSON object", field="body")
    for name in ("platform", "token", "app_id"):
        if not isinstance(body.get(name), str):
            raise ApiError(400, "invalid", "required string", field=name)
    device_id = await directory.register_device(
        request.path_params["user_id"], body["platform"], body["token"], body["app_id"]
    )
    return JSONResponse({"device_id": device_id}, 201)


@endpoint
async def unregister_device(request: Request) -> Response:
    """Remove a device: it receives no more pushes."""
    p, directory = request.path_params, _directory(request, CONTACTS_WRITE)
    if not await directory.unregister_device(p["user_id"], p["device_id"]):
        raise ApiError(404, "not_found", "unknown device", field="device_id")
    return Response(status_code=204)


@endpoint
async def put_preferences(request: Request) -> Response:
    """Opt in or out per channel (push, sms, email) and category ('*' = every category)."""
    directory = _directory(request, CONTACTS_WRITE)
    body = await _json(request)
    prefs = body.get("preferences") if isinstance(body, dict) else None
    if not isinstance(prefs, list):
        raise ApiError(400, "invalid", "must be an array", field="preferences")
    rows: list[Any] = []
    for i, p in enumerate(prefs):
        if not isinstance(p, dict):
            raise ApiError(400, "invalid", "must be an object", field=f"preferences[{i}]")
        rows.append((p.get("channel"), p.get("category", "*"), p.get("opt_in")))
    try:
        stored = await directory.set_preferences(request.path_params["user_id"], rows)
    except ValidationError as err:
        raise ValidationError(f"preferences{err.field}", err.message) from None
    return JSONResponse({"user_id": request.path_params["user_id"], "preferences": stored})


# --- recurring schedules ----------------------------------------------------------


def _owner(request: Request, owner: Any) -> str:
    client: ApiClient = request.state.client
    owner = owner or client.name
    if not isinstance(owner, str) or not client.may_send_as(owner):
        raise ApiError(
            403, "forbidden", f"client {client.name} may not act as {owner!r}", field="owner"
        )
    return owner


@endpoint
async def create_schedule(request: Request) -> Response:
    """Create a recurring schedule: a cron expression and the request to publish."""
    _charge(request, request.state.client)
    intake: Intake = request.app.state.intake
    body = await _json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "must be a JSON object", field="body")
    owner = _owner(request, body.get("owner"))
    req = body.get("request")
    if not isinstance(req, dict):
        raise ApiError(400, "invalid", "must be a JSON object", field="request")
    if not request.state.client.may_send(req.get("category", "")):
        raise ApiError(403, "forbidden", "category not allowed", field="request.category")
    try:
        schedule = await intake.schedules.create(
            owner,
            body.get("cron", ""),
            req,
            timezone=body.get("timezone", "UTC"),
            schedule_id=body.get("schedule_id"),
        )
    except ValueError as err:
        if isinstance(err, ValidationError):
            raise
        raise ApiError(409, "conflict", str(err), field="schedule_id") from None
    return JSONResponse(schedule.as_dict(), 201)


@endpoint
async def list_schedules(request: Request) -> Response:
    """The recurring schedules of an owner (default: this client)."""
    _charge(request, request.state.client)
    owner = _owner(request, request.query_params.get("owner"))
    schedules = await request.app.state.intake.schedules.of_owner(owner)
    return JSONResponse({"schedules": [s.as_dict() for s in schedules]})


@endpoint
async def get_schedule(request: Request) -> Response:
    """One recurring schedule."""
    _charge(request, request.state.client)
    owner = _owner(request, request.query_params.get("owner"))
    s = await request.app.state.intake.schedules.get(owner, request.path_params["schedule_id"])
    if s is None:
        raise ApiError(404, "not_found", "unknown schedule", field="schedule_id")
    return JSONResponse(s.as_dict())


@endpoint
async def delete_schedule(request: Request) -> Response:
    """Delete a recurring schedule: it fires no more."""
    _charge(request, request.state.client)
    owner = _owner(request, request.query_params.get("owner"))
    if not await request.app.state.intake.schedules.delete(
        owner, request.path_params["schedule_id"]
    ):
        raise ApiError(404, "not_found", "unknown schedule", field="schedule_id")
    return Response(status_code=204)


# --- templates --------------------------------------------------------------------


def _templates(request: Request, scope: str) -> TemplateStore:
    return _scoped(request, scope).templates


def _changed(request: Request, template_id: str) -> None:
    # This process's own caches learn at once; other API replicas within cache_ttl_s.
    intake: Intake = request.app.state.intake
    intake.header_params.forget(template_id)
    intake.known_templates.invalidate(template_id)


@endpoint
async def create_template(request: Request) -> Response:
    """Create a template (version 1): declared params, variants per channel and locale."""
    store = _templates(request, TEMPLATES_WRITE)
    body = await _json(request)
    template_id = body.get("template_id") if isinstance(body, dict) else None
    if not isinstance(template_id, str):
        raise ApiError(400, "invalid", "required string", field="template_id")
    try:
        version = await store.create(template_id, body, author=request.state.client.name)
    except Conflict as err:
        raise ApiError(409, "conflict", str(err), field="template_id") from None
    _changed(request, version.template_id)
    return JSONResponse(version.as_dict(), 201)


@endpoint
async def list_templates(request: Request) -> Response:
    """Every template with its latest version."""
    store = _templates(request, TEMPLATES_READ)
    return JSONResponse({"templates": await store.list()})


async def _version_of(store: TemplateStore, ref: str, pinned: str | None) -> Any:
    template_id, version = split_ref(ref)
    if pinned is not None:
        if not pinned.isdigit():
            raise ApiError(400, "invalid", "a version number", field="version")
        version = int(pinned)
    found = await store.get(template_id, version)
    if found is None:
        raise ApiError(404, "not_found", "unknown template or version", field="template_id")
    return found


@endpoint
async def get_template(request: Request) -> Response:
    """The latest version of a template, or `?version=n` (or `id@n`)."""
    store = _templates(request, TEMPLATES_READ)
    found = await _version_of(
        store, request.path_params["template_id"], request.query_params.get("version")
    )
    return JSONResponse(found.as_dict())


@endpoint
async def add_template_version(request: Request) -> Response:
    """A new version; it becomes the latest and reaches running processors at once."""
    store = _templates(request, TEMPLATES_WRITE)
    template_id = request.path_params["template_id"]
    body = await _json(request)
    try:
        version = await store.add_version(template_id, body, author=request.state.client.name)
    except LookupError:
        raise ApiError(404, "not_found", "unknown template", field="template_id") from None
    except Conflict as err:
        raise ApiError(409, "conflict", str(err), field="template_id") from None
    _changed(request, template_id)
    return JSONResponse(version.as_dict(), 201)


@endpoint
async def delete_template(request: Request) -> Response:
    """Delete a template and all its versions: requests naming it are dropped."""
    store = _templates(request, TEMPLATES_WRITE)
    template_id = request.path_params["template_id"]
    if not await store.delete(template_id):
        raise ApiError(404, "not_found", "unknown template", field="template_id")
    _changed(request, template_id)
    return Response(status_code=204)


@endpoint
async def preview_template(request: Request) -> Response:
    """Render a version for a locale with sample params, per channel; nothing is sent."""
    store = _templates(request, TEMPLATES_READ)
    body = await _json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "must be a JSON object", field="body")
    version = body.get("version")
    if version is not None and not (isinstance(version, int) and version > 0):
        raise ApiError(400, "invalid", "a version number", field="version")
    found = await _version_of(
        store, request.path_params["template_id"], None if version is None else str(version)
    )
    params = body.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise ApiError(400, "invalid", "an object of string values", field="params")
    locale = body.get("locale", "en")
    channels = body.get("channels", [])
    if not isinstance(locale, str) or not isinstance(channels, list):
        raise ApiError(400, "invalid", "locale: a string, channels: an array", field="body")
    try:
        return JSONResponse(preview(found, locale, params, channels))
    except TemplateError as err:
        raise ApiError(400, "invalid", f"does not render: {err}", field="params") from None


# --- the in-app inbox (producers.inbox) --------------------------------------------


def feed_endpoint(*, write: bool) -> Callable[[Handler], Handler]:
    """A user token for the path's user, or an API client with inbox:read / inbox:write."""

    async def access(request: Request) -> None:
        intake: Intake = request.app.state.intake
        user_id = request.path_params["user_id"]
        token = inbox.bearer(request)
        if token is not None:
            try:
                link = inbox.verify_user_token(token, user_id, intake.settings.links.secret)
            except BadLink as err:
                raise ApiError(401, "unauthenticated", f"user token refused: {err}") from None
            except PermissionError as err:
                raise ApiError(403, "forbidden", str(err), field="user_id") from None
            request.state.access = inbox.FeedAccess(user_id, client=None, token=link)
            return
        client = await _authenticate(request)
        _charge(request, client)
        scope = INBOX_WRITE if write else INBOX_READ
        if scope not in client.scopes:
            raise ApiError(403, "forbidden", f"client {client.name} lacks the {scope} scope")
        request.state.access = inbox.FeedAccess(user_id, client=client, token=None)

    def deco(handler: Handler) -> Handler:
        wrapped = _guarded(handler, access)
        wrapped.__name__ = handler.__name__
        wrapped.__doc__ = handler.__doc__
        return wrapped

    return deco


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid", "true or false", field=name)
    return value in ("true", "1")


@endpoint
async def mint_feed_token(request: Request) -> Response:
    """A short-lived user token for one user's feed (scope inbox:token)."""
    intake = _scoped(request, INBOX_TOKEN)
    user_id = request.path_params["user_id"]
    s = intake.settings.inbox
    body = await _json(request) if await request.body() else {}
    ttl = body.get("ttl_s", s.token_ttl_s) if isinstance(body, dict) else None
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= s.token_max_ttl_s:
        raise ApiError(400, "invalid", f"seconds, 1 to {s.token_max_ttl_s}", field="ttl_s")
    if not await intake.user_exists(user_id):
        raise ApiError(404, "not_found", "unknown user", field="user_id")
    client: ApiClient = request.state.client
    token, expires = inbox.user_token(user_id, client.client_id, ttl, intake.settings.links.secret)
    return JSONResponse(
        {
            "token": token,
            "user_id": user_id,
            "expires_at": expires,
            "page_url": inbox.page_url(intake.settings.links.base_url, token),
        },
        201,
    )


@feed_endpoint(write=False)
async def get_feed(request: Request) -> Response:
    """The user's feed, newest first: cursor pagination, filters unread / category /
    archived, and the counts."""
    intake: Intake = request.app.state.intake
    s = intake.settings.inbox
    raw_limit = request.query_params.get("limit", str(s.page_size))
    if not raw_limit.isdigit() or not 0 < int(raw_limit) <= s.max_page_size:
        raise ApiError(400, "invalid", f"1 to {s.max_page_size}", field="limit")
    user_id = request.path_params["user_id"]
    try:
        page = await intake.inbox.page(
            user_id,
            limit=int(raw_limit),
            cursor=request.query_params.get("cursor") or None,
            unread=_flag(request, "unread"),
            category=request.query_params.get("category") or None,
            archived=_flag(request, "archived"),
        )
    except BadCursor as err:
        raise ApiError(400, "invalid", str(err), field="cursor") from None
    return JSONResponse(
        {
            "items": [it.as_json() for it in page.items],
            "next_cursor": page.next_cursor,
            "counts": await intake.inbox.counts(user_id),
        }
    )


@feed_endpoint(write=False)
async def get_feed_counts(request: Request) -> Response:
    """Unread and unseen items (archived ones not counted)."""
    intake: Intake = request.app.state.intake
    return JSONResponse(await intake.inbox.counts(request.path_params["user_id"]))


def _feed_state(state: State) -> Handler:
    async def change(request: Request) -> Response:
        intake: Intake = request.app.state.intake
        user_id = request.path_params["user_id"]
        try:
            ids = inbox.parse_ids(await _json(request))
        except ValueError as err:
            raise ApiError(400, "invalid", str(err), field="item_ids") from None
        found, changed = await intake.inbox.mark(user_id, ids, state)
        outcome = inbox.ANNOUNCED.get(state)
        if outcome is not None and changed:
            assert intake.publisher is not None
            topic = inbox.status_topic(intake.settings.topic_prefix)
            await asyncio.gather(
                *(
                    intake.publisher.publish_status(topic, inbox.status_for(it, outcome))
                    for it in changed
                )
            )
        return JSONResponse({"updated": found, "counts": await intake.inbox.counts(user_id)})

    change.__name__ = f"mark_{state}"
    change.__doc__ = f"Mark items {state} (`item_ids`, or `all: true`)."
    return feed_endpoint(write=True)(change)


@feed_endpoint(write=False)
async def feed_stream(request: Request) -> Response:
    """New items as Server-Sent Events (`item`, `counts`, `expired`)."""
    intake: Intake = request.app.state.intake
    access: inbox.FeedAccess = request.state.access
    expires = access.token.expires_at if access.token is not None else None
    return inbox.stream_response(
        inbox.stream(request, intake.inbox, request.path_params["user_id"], expires)
    )


async def inbox_page(request: Request) -> Response:
    """The embeddable feed page for the user named by `?token=`."""
    intake: Intake = request.app.state.intake
    token = request.query_params.get("token", "")
    try:
        link = inbox.page_token(token, intake.settings.links.secret)
    except BadLink:
        return Response(
            "This link is invalid or has expired.",
            401,
            media_type="text/plain",
            headers={"Cache-Control": "no-store"},
        )
    try:
        items = (await intake.inbox.page(link.user_id, limit=intake.settings.inbox.page_size)).items
        counts = await intake.inbox.counts(link.user_id)
    except _CASSANDRA_DOWN:
        return Response("Try again in a moment.", 503, headers={"Retry-After": "1"})
    return inbox.page(link.user_id, token, items, counts, intake.settings.inbox.frame_ancestors)


async def inbox_script(request: Request) -> Response:
    return Response(
        inbox.script(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300"},
    )


# --- app --------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(request.app.state.intake.settings))


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/u/{token}", unsubscribe_page, methods=["GET"]),
    Route("/u/{token}", unsubscribe, methods=["POST"]),
    Route("/preferences/{token}", preferences_page, methods=["GET"]),
    Route("/preferences/{token}", save_preferences, methods=["POST"]),
    Route("/webhooks/twilio/sms", sms_inbound, methods=["POST"]),
    Route("/v1/notifications", send_notifications, methods=["POST"]),
    Route("/v1/notifications/{event_id}", get_notification, methods=["GET"]),
    Route("/v1/notifications/{event_id}", cancel_notification, methods=["DELETE"]),
    Route("/v1/users/{user_id}", get_user, methods=["GET"]),
    Route("/v1/users/{user_id}", put_user, methods=["PUT"]),
    Route("/v1/users/{user_id}", delete_user, methods=["DELETE"]),
    Route("/v1/users/{user_id}/devices", register_device, methods=["POST"]),
    Route("/v1/users/{user_id}/devices/{device_id}", unregister_device, methods=["DELETE"]),
    Route("/v1/users/{user_id}/preferences", put_preferences, methods=["PUT"]),
    Route("/v1/users/{user_id}/{field}", delete_user_field, methods=["DELETE"]),
    Route("/v1/users/{user_id}/feed/token", mint_feed_token, methods=["POST"]),
    Route("/v1/users/{user_id}/feed", get_feed, methods=["GET"]),
    Route("/v1/users/{user_id}/feed/counts", get_feed_counts, methods=["GET"]),
    Route("/v1/users/{user_id}/feed/stream", feed_stream, methods=["GET"]),
    Route("/v1/users/{user_id}/feed/read", _feed_state("read"), methods=["POST"]),
    Route("/v1/users/{user_id}/feed/seen", _feed_state("seen"), methods=["POST"]),
    Route("/v1/users/{user_id}/feed/archive", _feed_state("archived"), methods=["POST"]),
    Route("/inbox", inbox_page, methods=["GET"]),
    Route("/static/herald-inbox.js", inbox_script, methods=["GET"]),
    Route("/v1/templates", create_template, methods=["POST"]),
    Route("/v1/templates", list_templates, methods=["GET"]),
    Route("/v1/templates/{template_id}", get_template, methods=["GET"]),
    Route("/v1/templates/{template_id}", delete_template, methods=["DELETE"]),
    Route("/v1/templates/{template_id}/versions", add_template_version, methods=["POST"]),
    Route("/v1/templates/{template_id}/preview", preview_template, methods=["POST"]),
    Route("/v1/schedules", create_schedule, methods=["POST"]),
    Route("/v1/schedules", list_schedules, methods=["GET"]),
    Route("/v1/schedules/{schedule_id}", get_schedule, methods=["GET"]),
    Route("/v1/schedules/{schedule_id}", delete_schedule, methods=["DELETE"]),
]


def create_app(settings: IntakeSettings, intake: Intake | None = None) -> Starlette:
    """The ASGI app. Without `intake` it connects on startup and closes on shutdown;
    with one (tests), the caller owns its lifetime."""
    owned = intake is None
    state = intake or Intake(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if owned:
            await state.start()
        try:
            yield
        finally:
            if owned:
                await state.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.intake = state
    return app
