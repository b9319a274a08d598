"""`/v1/users/{id}`: contacts, devices and preferences, through the contacts directory
(`producers.contacts`), with the `contacts:read` / `contacts:write` scopes."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from producers.api.auth import ApiError, contacts_directory, endpoint, read_json, read_object
from producers.clients import (
    CONTACTS_READ,
    CONTACTS_WRITE,
)
from producers.contacts import UNSET
from schemas.validation import ValidationError

USER_FIELDS = ("email", "phone", "locale", "timezone", "quiet_hours")


@endpoint
async def get_user(request: Request) -> Response:
    """A user's contacts, devices (without tokens) and preferences."""
    user = await contacts_directory(request, CONTACTS_READ).get_user(request.path_params["user_id"])
    if user is None:
        raise ApiError(404, "not_found", "unknown user", field="user_id")
    return JSONResponse(user)


@endpoint
async def put_user(request: Request) -> Response:
    """Create or update a user; fields left out are unchanged, null clears one."""
    directory = contacts_directory(request, CONTACTS_WRITE)
    body = await read_object(request)
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
    if not await contacts_directory(request, CONTACTS_WRITE).delete_user(
        request.path_params["user_id"]
    ):
        raise ApiError(404, "not_found", "unknown user", field="user_id")
    return Response(status_code=204)


@endpoint
async def delete_user_field(request: Request) -> Response:
    """Clear one of email, phone, locale, timezone, quiet_hours."""
    directory = contacts_directory(request, CONTACTS_WRITE)
    name = request.path_params["field"]
    if name not in USER_FIELDS:
        raise ApiError(404, "not_found", f"no user field {name!r}", field="field")
    cleared: dict[str, Any] = {name: None}
    await directory.set_user(request.path_params["user_id"], **cleared)
    return Response(status_code=204)


@endpoint
async def register_device(request: Request) -> Response:
    """Register a device (ios, android, web) with its token and app id."""
    directory = contacts_directory(request, CONTACTS_WRITE)
    body = await read_object(request)
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
    p, directory = request.path_params, contacts_directory(request, CONTACTS_WRITE)
    if not await directory.unregister_device(p["user_id"], p["device_id"]):
        raise ApiError(404, "not_found", "unknown device", field="device_id")
    return Response(status_code=204)


@endpoint
async def put_preferences(request: Request) -> Response:
    """Opt in or out per channel (push, sms, email) and category ('*' = every category)."""
    directory = contacts_directory(request, CONTACTS_WRITE)
    body = await read_json(request)
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
