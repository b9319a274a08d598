"""The send API's OpenAPI 3.1 document, served at `/openapi.json`.

Request schemas come from the pydantic models the API validates with, so the document
cannot drift from the code; a test checks every route is documented and vice versa.
"""

from __future__ import annotations

from typing import Any

from producers.request import NotificationRequest
from producers.settings import IntakeSettings

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid input; `field` names it.",
        401: "Missing or wrong app key / secret.",
        403: "This client may not use that source, category or owner, or lacks the "
        "scope the call needs (contacts:read|write, templates:read|write).",
        404: "Not found (also another client's notification).",
        409: "Conflict with the current state; on POST /v1/notifications "
        "`idempotency_key_reused`: the Idempotency-Key was used with another body.",
        413: "Body too large.",
        429: "Quota exceeded; see Retry-After.",
        503: "Kafka or Cassandra unavailable; retry (same Idempotency-Key).",
    }
    return {str(c): {"description": text[c], **_json(_ref("Error"))} for c in codes}


def _op(
    summary: str,
    ok: tuple[int, str, dict[str, Any] | None],
    *,
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (400, 401, 429, 503),
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    status, description, schema = ok
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"appKey": [], "appSecret": []}, {"basic": []}],
        "responses": {
            str(status): {"description": description, **(_json(schema) if schema else {})},
            **_errors(*errors),
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _public(
    summary: str,
    responses: dict[str, str],
    form: dict[str, Any] | None = None,
    *,
    signed_link: bool = True,
) -> Any:
    """A route for people or providers: no app key (a signed link or signature instead)."""
    op: dict[str, Any] = {
        "summary": summary,
        "security": [],
        "responses": {code: {"description": text} for code, text in responses.items()},
    }
    if signed_link:
        op["parameters"] = [_path("token")]
    if form is not None:
        media = {"application/x-www-form-urlencoded": {"schema": form}}
        op["requestBody"] = {"required": True, "content": media}
    return op


def _form(**fields: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {k: {"type": "string", "description": v} for k, v in fields.items()},
    }


CONTACTS_ERRORS = (400, 401, 403, 429, 503)
FEED_SECURITY: list[dict[str, list[str]]] = [
    {"userToken": []},
    {"appKey": [], "appSecret": []},
    {"basic": []},
]


def _feed(op: dict[str, Any]) -> dict[str, Any]:
    """A feed route: a user token for the path's user, or an app key with inbox:read|write."""
    return {**op, "security": FEED_SECURITY}


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": kind},
    }


def _inbox_paths(uid: dict[str, Any]) -> dict[str, Any]:
    errors = (400, 401, 403, 429, 503)
    state = {
        name: {
            "post": _feed(
                _op(
                    f"Mark items {verb}; {note}",
                    (200, "The ids found in the feed and the new counts.", None),
                    body=_ref("FeedIds"),
                    errors=errors,
                    params=[uid],
                )
            )
        }
        for name, verb, note in (
            ("read", "read", "announces `read` on notifications.status (first time)."),
            ("seen", "seen", "announces `seen` on notifications.status (first time)."),
            ("archive", "archived", "archived items leave the feed and the counts."),
        )
    }
    return {
        "/v1/users/{user_id}/feed/token": {
            "post": _op(
                "Mint a short-lived user token for this user's feed (scope inbox:token); "
                "body optional: `ttl_s` (default 900, at most 3600).",
                (201, "The token.", _ref("FeedToken")),
                errors=(400, 401, 403, 404, 429, 503),
                params=[uid],
            )
        },
        "/v1/users/{user_id}/feed": {
            "get": _feed(
                _op(
                    "The user's feed, newest first (the newest 500 items at most).",
                    (200, "A page of items, the next cursor and the counts.", _ref("Feed")),
                    errors=errors,
                    params=[
                        uid,
                        _query("cursor", "`next_cursor` of the previous page."),
                        _query("limit", "Items per page, 1-100 (20).", "integer"),
                        _query("unread", "Only unread items.", "boolean"),
                        _query("category", "Only items of this category."),
                        _query("archived", "Archived items instead of the feed.", "boolean"),
                    ],
                )
            )
        },
        "/v1/users/{user_id}/feed/counts": {
            "get": _feed(
                _op(
                    "Unread and unseen counts (archived items not counted).",
                    (200, "The counts.", _ref("FeedCounts")),
                    errors=errors,
                    params=[uid],
                )
            )
        },
        "/v1/users/{user_id}/feed/stream": {
            "get": _feed(
                _op(
                    "New items as Server-Sent Events: `item` (id = cursor), `counts`, and "
                    "`expired` when the user token runs out.",
                    (200, "text/event-stream.", None),
                    errors=errors,
                    params=[uid, _query("token", "The user token (EventSource sets no header).")],
                )
            )
        },
        **{f"/v1/users/{{user_id}}/feed/{name}": ops for name, ops in state.items()},
        "/inbox": {
            "get": {
                "summary": "The embeddable feed page (HTML + /static/herald-inbox.js) of the "
                "user named by the user token in `?token=`.",
                "security": [],
                "parameters": [_query("token", "A user token.")],
                "responses": {
                    "200": {"description": "HTML page."},
                    "401": {"description": "Token altered or expired."},
                },
            }
        },
        "/static/herald-inbox.js": {
            "get": {
                "summary": "The `<herald-inbox>` web component the page loads.",
                "security": [],
                "responses": {"200": {"description": "JavaScript."}},
            }
        },
    }


OWNER = {"name": "owner", "in": "query", "required": False, "schema": {"type": "string"}}


def openapi_document(settings: IntakeSettings | None = None) -> dict[str, Any]:
    request_schema = NotificationRequest.model_json_schema(ref_template=REF)
    defs = request_schema.pop("$defs", {})
    schemas: dict[str, Any] = {
        **defs,
        "NotificationRequest": request_schema,
        "NotificationBatch": {
            "type": "object",
            "required": ["notifications"],
            "properties": {
                "notifications": {"type": "array", "items": _ref("NotificationRequest")}
            },
        },
        "Accepted": {
            "type": "object",
            "properties": {
                "event_id": {"type": "string"},
                "notification_id": {"type": "string"},
                "send_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "AcceptedBatch": {
            "type": "object",
            "properties": {"notifications": {"type": "array", "items": _ref("Accepted")}},
        },
        "NotificationStatus": {
            "type": "object",
            "properties": {
                "event_id": {"type": "string"},
                "notification_id": {"type": "string"},
                "scheduled": {
                    "type": ["string", "null"],
                    "description": "held | releasing | released | canceled; null if never held",
                },
                "deliveries": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            k: {"type": ["string", "null"]}
                            for k in ("delivery_id", "channel", "state", "reason", "provider")
                        },
                    },
                },
            },
        },
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        },
        "UserUpdate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "email": {"type": ["string", "null"], "format": "email"},
                "phone": {"type": ["string", "null"], "description": "Any form; stored E.164."},
                "locale": {"type": ["string", "null"]},
                "timezone": {"type": ["string", "null"], "description": "IANA name."},
                "quiet_hours": {"type": ["string", "null"], "examples": ["22:00-07:00"]},
                "unsubscribed_all": {"type": "boolean"},
            },
        },
        "User": {"type": "object", "additionalProperties": True},
        "Device": {
            "type": "object",
            "required": ["platform", "token", "app_id"],
            "properties": {
                "platform": {"enum": ["ios", "android", "web"]},
                "token": {
                    "type": "string",
                    "description": "APNs: 64 hex; FCM registration token; web: Web Push "
                    "subscription JSON or FCM token.",
                },
                "app_id": {"type": "string"},
            },
        },
        "Preferences": {
            "type": "object",
            "required": ["preferences"],
            "properties": {
                "preferences": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["channel", "opt_in"],
                        "properties": {
                            "channel": {"enum": ["push", "sms", "email"]},
                            "category": {"type": "string", "default": "*"},
                            "opt_in": {"type": "boolean"},
                        },
                    },
                }
            },
        },
        "ScheduleCreate": {
            "type": "object",
            "required": ["cron", "request"],
            "properties": {
                "schedule_id": {"type": "string"},
                "owner": {"type": "string", "description": "Default: the client's name."},
                "cron": {"type": "string", "examples": ["0 9 * * mon"]},
                "timezone": {"type": "string", "default": "UTC"},
                "request": {
                    "type": "object",
                    "description": "A NotificationRequest without event_id, created_at, "
                    "send_at (set per firing).",
                },
            },
        },
        "Schedule": {"type": "object", "additionalProperties": True},
        "TemplateVariant": {
            "type": "object",
            "required": ["channel", "locale"],
            "additionalProperties": False,
            "description": "email: subject, body (plain text) and html; push and inapp: "
            "body and optional title; sms: body. Jinja2 (sandboxed) using only declared "
            "params (and count, items, digest_key in a digest's template).",
            "properties": {
                "channel": {"enum": ["push", "sms", "email", "inapp"]},
                "locale": {"type": "string", "examples": ["en", "ko-KR"]},
                "title": {"type": ["string", "null"]},
                "subject": {"type": ["string", "null"]},
                "body": {"type": ["string", "null"]},
                "html": {"type": ["string", "null"]},
            },
        },
        "TemplateVersionInput": {
            "type": "object",
            "required": ["variants"],
            "additionalProperties": False,
            "properties": {
                "template_id": {
                    "type": "string",
                    "pattern": "^[a-z0-9][a-z0-9_.-]{0,99}$",
                    "description": "Required on create.",
                },
                "description": {"type": "string"},
                "params": {"type": "array", "items": {"type": "string"}},
                "examples": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Sample values: save-time SMS/push size estimates and "
                    "preview defaults.",
                },
                "variants": {"type": "array", "items": _ref("TemplateVariant")},
                "digest": _ref("Digest"),
            },
        },
        "TemplateVersion": {
            "type": "object",
            "properties": {
                "template_id": {"type": "string"},
                "version": {"type": "integer"},
                "params": {"type": "array", "items": {"type": "string"}},
                "examples": {"type": "object", "additionalProperties": {"type": "string"}},
                "variants": {"type": "array", "items": _ref("TemplateVariant")},
                "description": {"type": ["string", "null"]},
                "created_by": {"type": ["string", "null"]},
                "created_at": {"type": ["string", "null"], "format": "date-time"},
                "digest": {
                    "type": ["object", "null"],
                    "description": "The declared digest: key, window_s, template_id.",
                },
            },
        },
        "TemplatePreviewInput": {
            "type": "object",
            "properties": {
                "version": {"type": "integer", "description": "Default: the latest."},
                "locale": {"type": "string", "default": "en"},
                "params": {"type": "object", "additionalProperties": {"type": "string"}},
                "channels": {
                    "type": "array",
                    "items": {"enum": ["push", "sms", "email", "inapp"]},
                },
            },
        },
        "TemplatePreview": {"type": "object", "additionalProperties": True},
        "FeedItem": {
            "type": "object",
            "properties": {
                "item_id": {"type": "string", "description": "The delivery id."},
                "notification_id": {"type": "string"},
                "category": {"type": "string"},
                "title": {"type": ["string", "null"]},
                "body": {"type": "string"},
                "data": {"type": "object", "additionalProperties": {"type": "string"}},
                "created_at": {"type": "string", "format": "date-time"},
                **{k: {"type": "boolean"} for k in ("seen", "read", "archived")},
                **{
                    f"{k}_at": {"type": ["string", "null"], "format": "date-time"}
                    for k in ("seen", "read", "archived")
                },
            },
        },
        "FeedCounts": {
            "type": "object",
            "properties": {k: {"type": "integer"} for k in ("total", "unread", "unseen")},
        },
        "Feed": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": _ref("FeedItem")},
                "next_cursor": {"type": ["string", "null"]},
                "counts": _ref("FeedCounts"),
            },
        },
        "FeedIds": {
            "type": "object",
            "description": "`item_ids` (at most 500), or `all: true` for every item.",
            "properties": {
                "item_ids": {"type": "array", "items": {"type": "string"}},
                "all": {"type": "boolean"},
            },
        },
        "FeedToken": {
            "type": "object",
            "properties": {
                "token": {"type": "string"},
                "user_id": {"type": "string"},
                "expires_at": {"type": "integer", "description": "Epoch seconds."},
                "page_url": {"type": "string", "description": "The embeddable feed page."},
            },
        },
    }
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Scoped to this client: the event id is `<client_id>:<key>` "
        "(`<client_id>:<key>:<index>` in a batch). The same key and body again (7 days) "
        "returns the same ids with `Idempotent-Replayed: true` and is never delivered "
        "twice; the same key with another body is 409.",
        "schema": {"type": "string", "maxLength": 180},
    }
    uid = _path("user_id")
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness.", "responses": {"200": {"description": "Up."}}}},
        "/openapi.json": {
            "get": {"summary": "This document.", "responses": {"200": {"description": "OK."}}}
        },
        "/u/{token}": {
            "get": _public(
                "One-click unsubscribe link opened by a person: an HTML page with a button "
                "that POSTs (a GET never unsubscribes).",
                {"200": "HTML confirmation page.", "400": "Link altered or expired."},
            ),
            "post": _public(
                "RFC 8058 one-click unsubscribe: records the opt-out of the link's channel and "
                "category (idempotent) and announces it on users.changes.",
                {
                    "200": "Unsubscribed (HTML).",
                    "400": "Link altered or expired, or no List-Unsubscribe=One-Click in the body.",
                },
                _form(**{"List-Unsubscribe": "One-Click"}),
            ),
        },
        "/preferences/{token}": {
            "get": _public(
                "The preference page (signed, expiring link): channels x categories and quiet "
                "hours as an HTML form; sets the CSRF cookie.",
                {"200": "HTML form.", "400": "Link altered or expired.", "404": "Unknown user."},
            ),
            "post": _public(
                "Save the preference form (CSRF token + cookie); redirects to the page.",
                {
                    "303": "Saved; see the page.",
                    "400": "Link or quiet hours invalid.",
                    "403": "CSRF check failed.",
                    "404": "Unknown user.",
                },
                _form(
                    csrf="The token from the page.",
                    **{"pref:<channel>:<category>": "on = opted in; absent = opted out."},
                    quiet_start="HH:MM or empty.",
                    quiet_end="HH:MM or empty.",
                ),
            ),
        },
        "/webhooks/twilio/sms": {
            "post": _public(
                "Twilio inbound SMS webhook (X-Twilio-Signature checked): STOP opts the number "
                "out of SMS, START back in, HELP replies with the help text (TwiML).",
                {"200": "TwiML reply.", "403": "Bad signature.", "404": "Not configured."},
                _form(
                    From="Sender, E.164.",
                    To="Our number.",
                    Body="The message.",
                    MessageSid="Twilio's id.",
                ),
            )
        },
        "/v1/notifications": {
            "post": _op(
                "Publish one notification request or a batch.",
                (202, "Durably queued.", {"oneOf": [_ref("Accepted"), _ref("AcceptedBatch")]}),
                body={"oneOf": [_ref("NotificationRequest"), _ref("NotificationBatch")]},
                errors=(400, 401, 403, 409, 413, 429, 503),
                params=[idem],
            )
        },
        "/v1/notifications/{event_id}": {
            "get": _op(
                "A request's hold state and each delivery's latest state (own requests only).",
                (200, "Status (empty deliveries: not fanned out yet).", _ref("NotificationStatus")),
                errors=(401, 404, 429, 503),
                params=[_path("event_id")],
            ),
            "delete": _op(
                "Cancel one of this client's scheduled requests before it is released.",
                (200, "Canceled.", None),
                errors=(401, 404, 409, 429, 503),
                params=[_path("event_id")],
            ),
        },
        "/v1/users/{user_id}": {
            "get": _op(
                "Read a user (scope contacts:read).",
                (200, "The user.", _ref("User")),
                errors=(401, 403, 404, 429, 503),
                params=[uid],
            ),
            "put": _op(
                "Create or update a user's contacts, locale, time zone, quiet hours "
                "(scope contacts:write).",
                (200, "Stored (normalized) values.", _ref("User")),
                body=_ref("UserUpdate"),
                errors=CONTACTS_ERRORS,
                params=[uid],
            ),
            "delete": _op(
                "Delete a user (scope contacts:write).",
                (204, "Deleted.", None),
                errors=(401, 403, 404, 429),
                params=[uid],
            ),
        },
        "/v1/users/{user_id}/{field}": {
            "delete": _op(
                "Clear one of email, phone, locale, timezone, quiet_hours (scope contacts:write).",
                (204, "Cleared.", None),
                errors=(401, 403, 404, 429),
                params=[uid, _path("field")],
            )
        },
        "/v1/users/{user_id}/devices": {
            "post": _op(
                "Register a device (scope contacts:write).",
                (201, "Registered.", {"type": "object"}),
                body=_ref("Device"),
                errors=CONTACTS_ERRORS,
                params=[uid],
            )
        },
        "/v1/users/{user_id}/devices/{device_id}": {
            "delete": _op(
                "Unregister a device (scope contacts:write).",
                (204, "Removed.", None),
                errors=(401, 403, 404, 429),
                params=[uid, _path("device_id")],
            )
        },
        "/v1/users/{user_id}/preferences": {
            "put": _op(
                "Opt in or out per channel and category (scope contacts:write).",
                (200, "Stored.", {"type": "object"}),
                body=_ref("Preferences"),
                errors=CONTACTS_ERRORS,
                params=[uid],
            )
        },
        "/v1/templates": {
            "post": _op(
                "Create a template, version 1 (scope templates:write).",
                (201, "Created.", _ref("TemplateVersion")),
                body=_ref("TemplateVersionInput"),
                errors=(400, 401, 403, 409, 429, 503),
            ),
            "get": _op(
                "List templates with their latest version (scope templates:read).",
                (200, "Templates.", {"type": "object"}),
                errors=(401, 403, 429, 503),
            ),
        },
        "/v1/templates/{template_id}": {
            "get": _op(
                "Read the latest version, `?version=n` or `<id>@<n>` (scope templates:read).",
                (200, "The version.", _ref("TemplateVersion")),
                errors=(400, 401, 403, 404, 429, 503),
                params=[
                    _path("template_id"),
                    {"name": "version", "in": "query", "schema": {"type": "integer"}},
                ],
            ),
            "delete": _op(
                "Delete a template and every version (scope templates:write).",
                (204, "Deleted.", None),
                errors=(401, 403, 404, 429, 503),
                params=[_path("template_id")],
            ),
        },
        "/v1/templates/{template_id}/versions": {
            "post": _op(
                "Add a version; it becomes the latest at once (scope templates:write).",
                (201, "Created.", _ref("TemplateVersion")),
                body=_ref("TemplateVersionInput"),
                errors=(400, 401, 403, 404, 409, 429, 503),
                params=[_path("template_id")],
            )
        },
        "/v1/templates/{template_id}/preview": {
            "post": _op(
                "Render a version for a locale with sample params, per channel; nothing is "
                "sent (scope templates:read).",
                (200, "Rendered channels.", _ref("TemplatePreview")),
                body=_ref("TemplatePreviewInput"),
                errors=(400, 401, 403, 404, 429, 503),
                params=[_path("template_id")],
            )
        },
        "/v1/schedules": {
            "post": _op(
                "Create a recurring schedule.",
                (201, "Created.", _ref("Schedule")),
                body=_ref("ScheduleCreate"),
                errors=(400, 401, 403, 409, 429),
            ),
            "get": _op(
                "List an owner's recurring schedules.",
                (200, "Schedules.", {"type": "object"}),
                errors=(401, 403, 429),
                params=[OWNER],
            ),
        },
        "/v1/schedules/{schedule_id}": {
            "get": _op(
                "Read a recurring schedule.",
                (200, "The schedule.", _ref("Schedule")),
                errors=(401, 403, 404, 429),
                params=[_path("schedule_id"), OWNER],
            ),
            "delete": _op(
                "Delete a recurring schedule.",
                (204, "Deleted.", None),
                errors=(401, 403, 404, 429),
                params=[_path("schedule_id"), OWNER],
            ),
        },
    }
    paths.update(_inbox_paths(uid))
    port = settings.api.port if settings else 8080
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "herald send API",
            "version": "1.0.0",
            "description": "Publish notification requests and manage users' contacts, "
            "devices, preferences, templates and recurring schedules; read and stream "
            "users' in-app feeds.",
        },
        "servers": [{"url": f"http://127.0.0.1:{port}"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "appKey": {"type": "apiKey", "in": "header", "name": "X-Herald-App-Key"},
                "appSecret": {"type": "apiKey", "in": "header", "name": "X-Herald-App-Secret"},
                "basic": {"type": "http", "scheme": "basic", "description": "key:secret"},
                "userToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A user token from POST /v1/users/{user_id}/feed/token "
                    "(or `?token=` where no header can be set: EventSource, the page).",
                },
            },
        },
    }
