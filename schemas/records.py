"""The Avro records as Python types (`schemas/avro/*.avsc`): what herald builds before
encoding and what `schemas.codec.decode` returns.

A field with a default in the schema is `NotRequired` here: a builder may leave it out
and the encoder fills it in; a decoded record always has every field. Timestamps
(`timestamp-millis`) are ms since the epoch when built and a UTC `datetime` once decoded.
"""

# No `from __future__ import annotations`: TypedDict reads NotRequired from the evaluated
# annotations (`__optional_keys__`), which the tests compare with the schemas' defaults.
from datetime import datetime
from typing import NotRequired, TypedDict

Millis = int | datetime


class Content(TypedDict):
    title: NotRequired[str | None]
    subject: NotRequired[str | None]
    body: str
    html: NotRequired[str | None]


class Digest(TypedDict):
    """`herald.Digest` (v2 of the request): collect with the other requests of this key."""

    key: str
    window_s: int
    template_id: NotRequired[str | None]


class NotificationRequest(TypedDict):
    """`herald.NotificationRequest` on `notifications.requested`, keyed by user id."""

    event_id: str
    notification_id: str
    source: str
    user_id: str
    category: str
    priority: NotRequired[str]
    channels: NotRequired[list[str]]
    template_id: NotRequired[str | None]
    params: NotRequired[dict[str, str]]
    content: NotRequired[dict[str, Content]]
    locale: NotRequired[str | None]
    send_at: NotRequired[Millis | None]
    expires_at: NotRequired[Millis | None]
    collapse_key: NotRequired[str | None]
    trace_id: NotRequired[str | None]
    metadata: NotRequired[dict[str, str]]
    created_at: Millis
    digest: NotRequired[Digest | None]


class Delivery(TypedDict):
    """`herald.Delivery` on the channel topics: one message to one address."""

    delivery_id: str
    notification_id: str
    event_id: str
    user_id: str
    channel: str
    category: str
    priority: NotRequired[str]
    device_id: NotRequired[str | None]
    address: str
    locale: NotRequired[str | None]
    title: NotRequired[str | None]
    subject: NotRequired[str | None]
    body: str
    html: NotRequired[str | None]
    data: NotRequired[dict[str, str]]
    collapse_key: NotRequired[str | None]
    expires_at: NotRequired[Millis | None]
    attempt: NotRequired[int]
    not_before: NotRequired[Millis | None]
    last_error: NotRequired[str | None]
    trace_id: NotRequired[str | None]
    requested_at: Millis
    created_at: Millis


class StatusEvent(TypedDict):
    """`herald.StatusEvent` on `notifications.status`, keyed by notification id."""

    status_id: str
    notification_id: str
    event_id: str
    delivery_id: NotRequired[str | None]
    user_id: str
    channel: NotRequired[str | None]
    provider: NotRequired[str | None]
    category: str
    outcome: str
    reason: NotRequired[str | None]
    attempt: NotRequired[int]
    provider_message_id: NotRequired[str | None]
    source: NotRequired[str | None]
    trace_id: NotRequired[str | None]
    requested_at: NotRequired[Millis | None]
    occurred_at: Millis


class UserChange(TypedDict):
    """`herald.UserChange` on `users.changes` (compacted), keyed by user id."""

    user_id: str
    kind: str  # user | contact | device | preference | deleted
    changed_at: Millis


class TemplateChange(TypedDict):
    """`herald.TemplateChange` on `templates.changes` (compacted), keyed by template id."""

    template_id: str
    version: int  # the version now latest; 0 when deleted
    kind: str  # created | version | deleted
    changed_at: Millis
