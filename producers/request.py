"""`NotificationRequest`: the producer-side model of the `herald.NotificationRequest` record.

Build one with keyword arguments (only `source`, `user_id`, `category` and a template or
content are required); `event_id` defaults to a fresh uuid and is the idempotency key:
resubmitting the same event id is dropped by the processor, so a caller that retries
after a timeout must reuse it. `validate_request` checks everything the schema cannot
express and raises `ValidationError` naming the field.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from schemas import codec
from schemas.channels import PreferenceChannel, Priority
from schemas.ids import notification_id
from schemas.validation import (
    ValidationError,
    check_header_value,
    check_text,
    refuse_contact_as_id,
)

MAX_ID_LEN = 200
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


def _now() -> datetime:
    now = datetime.now(UTC)
    # Avro timestamps are milliseconds: a request read back equals the one written.
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_millis(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


class Content(BaseModel):
    """Literal content for one preference channel (push | sms | email)."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    subject: str | None = None
    body: str
    html: str | None = None


_WINDOW = re.compile(r"^(?P<n>[1-9][0-9]*)(?P<unit>[smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
# A digest window: long enough to collect something, short enough to stay news.
MIN_DIGEST_WINDOW_S, MAX_DIGEST_WINDOW_S = 1, 7 * 86_400


class Digest(BaseModel):
    """Collect this request with the user's others of the same `key`; the processor sends
    them as one notification `window` after the first (e.g. `{"key": "social", "window":
    "1h"}`), rendered by `template_id` (default: the request's) with `count` and `items`."""

    model_config = ConfigDict(extra="forbid")

    key: str
    window: str | int = Field(description="30s, 15m, 1h, 1d, or seconds.")
    template_id: str | None = None

    @property
    def window_s(self) -> int:
        if isinstance(self.window, int):
            return self.window
        m = _WINDOW.match(self.window)
        if m is None:
            raise ValidationError("digest.window", "a duration such as 30s, 15m, 1h or 1d")
        return int(m["n"]) * _UNIT_S[m["unit"]]


class NotificationRequest(BaseModel):
    """One request to notify one user. Maps 1:1 onto `NotificationRequest.v2.avsc`."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(
        default_factory=lambda: str(uuid.uuid4()),
        description="Idempotency key chosen by the caller; a repeated id is dropped.",
    )
    source: str = Field(description="Calling service, e.g. billing.")
    user_id: str
    category: str = Field(description="security | transactional | marketing | social | custom.")
    priority: Priority = Priority.NORMAL
    channels: list[PreferenceChannel] = Field(
        default_factory=list, description="push | sms | email; empty = every allowed channel."
    )
    template_id: str | None = None
    params: dict[str, str] = Field(default_factory=dict, description="Template parameters.")
    content: dict[PreferenceChannel, Content] = Field(
        default_factory=dict, description="Literal content per channel, used without template."
    )
    locale: str | None = Field(default=None, description="Overrides the user's locale.")
    send_at: datetime | None = Field(default=None, description="Deliver at (scheduled).")
    expires_at: datetime | None = Field(default=None, description="Do not send after.")
    collapse_key: str | None = None
    trace_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=_now)
    digest: Digest | None = Field(default=None, description="Collect into a digest.")

    @property
    def notification_id(self) -> str:
        return notification_id(self.event_id)

    def to_avro(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "notification_id": self.notification_id,
            "source": self.source,
            "user_id": self.user_id,
            "category": self.category,
            "priority": str(self.priority),
            "channels": [str(c) for c in self.channels],
            "template_id": self.template_id,
            "params": dict(self.params),
            "content": {str(ch): c.model_dump() for ch, c in self.content.items()},
            "locale": self.locale,
            "send_at": to_millis(self.send_at),
            "expires_at": to_millis(self.expires_at),
            "collapse_key": self.collapse_key,
            "trace_id": self.trace_id,
            "metadata": dict(self.metadata),
            "created_at": to_millis(self.created_at),
            "digest": None
            if self.digest is None
            else {
                "key": self.digest.key,
                "window_s": self.digest.window_s,
                "template_id": self.digest.template_id,
            },
        }

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> NotificationRequest:
        data = {k: v for k, v in record.items() if k != "notification_id" and k in cls.model_fields}
        if data.get("digest") is not None:
            d = data["digest"]
            data["digest"] = {
                "key": d["key"],
                "window": d["window_s"],
                "template_id": d["template_id"],
            }
        return cls.model_validate(data)


def validate_request(
    req: NotificationRequest, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> bytes:
    """Check what the Avro schema cannot; returns the encoded record (to measure its size,
    and so the caller need not encode twice). Raises `ValidationError` naming the field."""
    check_text(req.model_dump())
    for name in ("event_id", "source", "user_id"):
        value = getattr(req, name)
        if not value or not value.strip():
            raise ValidationError(name, "must not be empty")
        if len(value) > MAX_ID_LEN:
            raise ValidationError(name, f"longer than {MAX_ID_LEN} characters")
    refuse_contact_as_id(req.user_id)
    if not _NAME.match(req.category):
        raise ValidationError(
            "category", "lower-case name: letters, digits, '_', '-', '.' (e.g. marketing)"
        )
    if len(set(req.channels)) != len(req.channels):
        raise ValidationError("channels", "lists a channel twice")
    if req.template_id is None:
        if not req.content:
            raise ValidationError("template_id", "give a template_id or literal content")
        for ch, c in req.content.items():
            if not c.body.strip():
                raise ValidationError(f"content.{ch}.body", "must not be empty")
        # An in-app item falls back to the push content (title and body).
        missing = [
            str(c)
            for c in req.channels
            if c not in req.content
            and not (c is PreferenceChannel.INAPP and PreferenceChannel.PUSH in req.content)
        ]
        if missing:
            raise ValidationError(
                "content", f"no content for requested channel(s) {', '.join(missing)}"
            )
    elif not req.template_id.strip():
        raise ValidationError("template_id", "must not be empty")
    for ch, c in req.content.items():
        check_header_value(c.subject, f"content.{ch}.subject")
        check_header_value(c.title, f"content.{ch}.title")
    check_header_value(req.collapse_key, "collapse_key")
    if req.locale is not None and not _LOCALE.match(req.locale):
        raise ValidationError("locale", "a BCP 47 tag such as en or ko-KR")
    if req.send_at is not None and (to_millis(req.send_at) or 0) <= 0:
        # Year 0001 or -1 ms is a caller's bug, not "send now": the processor refuses it too.
        raise ValidationError("send_at", "must be after 1970-01-01T00:00:00Z")
    if req.expires_at is not None:
        expires = to_millis(req.expires_at) or 0
        if expires <= (to_millis(req.send_at) or to_millis(req.created_at) or 0):
            raise ValidationError("expires_at", "must be after send_at (or now)")
    if req.digest is not None:
        _check_digest(req.digest, req.template_id)
    data = codec.encode(codec.REQUEST, req.to_avro())
    if len(data) > max_payload_bytes:
        raise ValidationError(
            "payload", f"encoded request is {len(data)} bytes; the limit is {max_payload_bytes}"
        )
    return data


def _check_digest(digest: Digest, template_id: str | None) -> None:
    check_digest(digest)
    if digest.template_id is None and template_id is None:
        # The digest's text lists its items: only a template can do that.
        raise ValidationError("digest.template_id", "a digest needs a template (template_id)")


def check_digest(digest: Digest) -> None:
    """Key, window and template of a digest, wherever it is declared."""
    if not _NAME.match(digest.key):
        raise ValidationError("digest.key", "lower-case name: letters, digits, '_', '-', '.'")
    window = digest.window_s
    if not MIN_DIGEST_WINDOW_S <= window <= MAX_DIGEST_WINDOW_S:
        raise ValidationError("digest.window", "from 1s to 7d")
    if digest.template_id is not None and not digest.template_id.strip():
        raise ValidationError("digest.template_id", "must not be empty")


def parse_digest(data: Any) -> Digest:
    """A digest declaration from JSON (a template's); ValidationError names the field."""
    if not isinstance(data, dict):
        raise ValidationError("digest", "an object: key, window, optional template_id")
    try:
        digest = Digest.model_validate(data)
    except PydanticError as exc:
        loc = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise ValidationError(
            f"digest.{loc}" if loc else "digest", exc.errors()[0]["msg"]
        ) from None
    check_digest(digest)
    return digest


def parse_request(data: Any, field_prefix: str = "", **defaults: Any) -> NotificationRequest:
    """Build a request from plain data (JSON); a bad field raises `ValidationError` naming it.
    `defaults` fill fields the data leaves out (e.g. `source` from the authenticated client)."""
    if not isinstance(data, dict):
        raise ValidationError(field_prefix.rstrip(".") or "body", "must be a JSON object")
    check_text(data, field_prefix.rstrip("."))
    try:
        return NotificationRequest.model_validate({**defaults, **data})
    except PydanticError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "request"
        raise ValidationError(f"{field_prefix}{loc}", str(first["msg"])) from None
