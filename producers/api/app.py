"""The ASGI app: every route, and the lifespan that starts and closes `Intake`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from producers.api.feed import (
    _feed_state,
    feed_stream,
    get_feed,
    get_feed_counts,
    inbox_page,
    inbox_script,
    mint_feed_token,
)
from producers.api.intake import Intake
from producers.api.notifications import cancel_notification, get_notification, send_notifications
from producers.api.schedules import create_schedule, delete_schedule, get_schedule, list_schedules
from producers.api.templates import (
    add_template_version,
    create_template,
    delete_template,
    get_template,
    list_templates,
    preview_template,
)
from producers.api.users import (
    delete_user,
    delete_user_field,
    get_user,
    put_preferences,
    put_user,
    register_device,
    unregister_device,
)
from producers.openapi import openapi_document
from producers.pages import (
    preferences_page,
    save_preferences,
    sms_inbound,
    unsubscribe,
    unsubscribe_page,
)
from producers.settings import IntakeSettings


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
