"""`/v1/schedules`: recurring sends, each owned by the client that created it."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from producers.api.auth import ApiError, charge, endpoint, read_object
from producers.api.intake import Intake
from producers.clients import (
    ApiClient,
)
from schemas.validation import ValidationError


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
    charge(request, request.state.client)
    intake: Intake = request.app.state.intake
    body = await read_object(request)
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
    charge(request, request.state.client)
    owner = _owner(request, request.query_params.get("owner"))
    schedules = await request.app.state.intake.schedules.of_owner(owner)
    return JSONResponse({"schedules": [s.as_dict() for s in schedules]})


@endpoint
async def get_schedule(request: Request) -> Response:
    """One recurring schedule."""
    charge(request, request.state.client)
    owner = _owner(request, request.query_params.get("owner"))
    s = await request.app.state.intake.schedules.get(owner, request.path_params["schedule_id"])
    if s is None:
        raise ApiError(404, "not_found", "unknown schedule", field="schedule_id")
    return JSONResponse(s.as_dict())


@endpoint
async def delete_schedule(request: Request) -> Response:
    """Delete a recurring schedule: it fires no more."""
    charge(request, request.state.client)
    owner = _owner(request, request.query_params.get("owner"))
    if not await request.app.state.intake.schedules.delete(
        owner, request.path_params["schedule_id"]
    ):
        raise ApiError(404, "not_found", "unknown schedule", field="schedule_id")
    return Response(status_code=204)
