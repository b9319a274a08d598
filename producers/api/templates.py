"""`/v1/templates`: create, list, version, delete and preview templates
(`producers.templates`), with the `templates:read` / `templates:write` scopes."""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from producers.api.auth import ApiError, endpoint, read_json, read_object, scoped_intake
from producers.api.intake import Intake
from producers.clients import (
    TEMPLATES_READ,
    TEMPLATES_WRITE,
)
from producers.templates import Conflict, TemplateStore, preview, split_ref


def _templates(request: Request, scope: str) -> TemplateStore:
    return scoped_intake(request, scope).templates


def _changed(request: Request, template_id: str) -> None:
    # This process's own caches learn at once; other API replicas within cache_ttl_s.
    intake: Intake = request.app.state.intake
    intake.header_params.forget(template_id)
    intake.known_templates.invalidate(template_id)


@endpoint
async def create_template(request: Request) -> Response:
    """Create a template (version 1): declared params, variants per channel and locale."""
    store = _templates(request, TEMPLATES_WRITE)
    body = await read_json(request)
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
    body = await read_json(request)
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
    body = await read_object(request)
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
