"""`/v1/notifications`: send (one request or a batch), read a notification's deliveries,
cancel a scheduled send."""

from __future__ import annotations

import asyncio
import logging
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from producers.api.auth import ApiError, charge, endpoint, read_json
from producers.api.intake import Intake
from producers.clients import (
    ApiClient,
)
from producers.idempotency import Claim, fingerprint
from producers.publisher import Prepared, PublishError
from producers.request import NotificationRequest, parse_request
from schemas.ids import notification_id
from schemas.validation import ValidationError, check_header_value, has_line_break

log = logging.getLogger(__name__)


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
    body = await read_json(request)
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
    charge(request, client, len(items))

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
    charge(request, request.state.client)
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
    charge(request, request.state.client)
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
