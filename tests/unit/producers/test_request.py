"""Request model and the checks the Avro schema cannot express."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from producers.request import NotificationRequest, parse_request, validate_request
from schemas import codec
from schemas.ids import notification_id
from schemas.validation import ValidationError


def make(**over: Any) -> NotificationRequest:
    base: dict[str, Any] = {
        "source": "billing",
        "user_id": "u-1",
        "category": "transactional",
        "template_id": "receipt",
    }
    base.update(over)
    return NotificationRequest.model_validate(base)


def test_defaults_and_ids() -> None:
    req = make()
    assert req.notification_id == notification_id(req.event_id)
    assert make().event_id != req.event_id
    assert req.created_at.tzinfo is not None


def test_to_avro_round_trips_through_the_codec() -> None:
    send_at = datetime(2030, 1, 1, 9, tzinfo=UTC)
    req = make(
        channels=["push", "email"],
        params={"amount": "9.99"},
        send_at=send_at,
        expires_at=send_at + timedelta(hours=1),
        metadata={"order": "42"},
    )
    data = validate_request(req)
    record = codec.decode(data, expect=codec.REQUEST)
    assert record["notification_id"] == req.notification_id
    assert record["channels"] == ["push", "email"]
    assert record["send_at"] == send_at
    assert NotificationRequest.from_avro(record) == req


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"user_id": " "}, "user_id"),
        ({"source": ""}, "source"),
        ({"event_id": "e" * 201}, "event_id"),
        ({"category": "Marketing!"}, "category"),
        ({"channels": ["sms", "sms"]}, "channels"),
        ({"template_id": None}, "template_id"),
        ({"template_id": " "}, "template_id"),
        ({"template_id": None, "content": {"sms": {"body": " "}}}, "content.sms.body"),
        (
            {"template_id": None, "channels": ["email"], "content": {"sms": {"body": "x"}}},
            "content",
        ),
        ({"locale": "english please"}, "locale"),
        (
            {
                "send_at": datetime(2030, 1, 2, tzinfo=UTC),
                "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
            },
            "expires_at",
        ),
        ({"params": {"blob": "x" * 70_000}}, "payload"),
    ],
)
def test_invalid_requests_name_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_request(make(**over))
    assert err.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"source": "s", "category": "c", "template_id": "t"}, "user_id"),
        ({"source": "s", "user_id": "u", "category": "c", "priority": "urgent"}, "priority"),
        ({"source": "s", "user_id": "u", "category": "c", "channels": ["fax"]}, "channels.0"),
        ({"source": "s", "user_id": "u", "category": "c", "colour": "red"}, "colour"),
        (
            {"source": "s", "user_id": "u", "category": "c", "content": {"sms": {}}},
            "content.sms.body",
        ),
        ("not an object", "body"),
    ],
)
def test_parse_request_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_request(data)
    assert err.value.field == field


def test_parse_request_prefix_and_defaults() -> None:
    req = parse_request({"user_id": "u", "category": "c", "template_id": "t"}, source="svc")
    assert req.source == "svc"
    with pytest.raises(ValidationError) as err:
        parse_request({"category": "c"}, "notifications[3].", source="svc")
    assert err.value.field == "notifications[3].user_id"


@pytest.mark.parametrize(
    "send_at",
    [datetime(1, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)],
)
def test_send_at_before_the_epoch_is_refused(send_at: datetime) -> None:
    with pytest.raises(ValidationError) as err:
        validate_request(make(send_at=send_at))
    assert err.value.field == "send_at"


@pytest.mark.parametrize(
    "user_id",
    ["jane@example.com", "josé@bücher.example", "+14155550123", "4155550123", "+44 20 7946 0958"],
)
def test_a_contact_as_user_id_is_refused(user_id: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_request(make(user_id=user_id))
    assert err.value.field == "user_id"


@pytest.mark.parametrize("user_id", ["u-1", "12345", "1732819282", "team@ops", "a.b-c"])
def test_ordinary_user_ids_are_accepted(user_id: str) -> None:
    validate_request(make(user_id=user_id))


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"user_id": "u-\ud800"}, "user_id"),
        ({"template_id": None, "content": {"sms": {"body": "hi \ud800"}}}, "content.sms.body"),
        ({"params": {"name": "\udfff"}}, "params.name"),
        ({"metadata": {"\ud800": "x"}}, "metadata"),
    ],
)
def test_a_lone_surrogate_names_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_request(make(**over))
    assert err.value.field == field
    with pytest.raises(ValidationError) as err:
        parse_request({**make().model_dump(mode="json"), **over})
    assert err.value.field == field


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"collapse_key": "k\r\nx-injected: 1"}, "collapse_key"),
        (
            {"template_id": None, "content": {"email": {"subject": "Hi\nBcc: x", "body": "b"}}},
            "content.email.subject",
        ),
        (
            {"template_id": None, "content": {"push": {"title": "a\u2028b", "body": "b"}}},
            "content.push.title",
        ),
        ({"collapse_key": "k\rx"}, "collapse_key"),
    ],
)
def test_a_line_break_in_a_header_bound_field_is_refused(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_request(make(**over))
    assert err.value.field == field


def test_line_breaks_in_bodies_and_params_are_fine() -> None:
    content = {"email": {"subject": "s", "body": "a\r\nb", "html": "<p>\n</p>"}}
    validate_request(make(template_id=None, content=content))
    validate_request(make(params={"address": "1 Main St\nSpringfield"}))
