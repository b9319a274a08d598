"""Masking of personal data in every part of a log line, and the JSON shape."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from urllib.parse import unquote

import pytest

from infra.logging import configure_logging, mask, mask_address
from schemas.validation import normalize_phone, validate_email

EMAIL = "jane.doe+alerts@example.com"
PHONES = ["+821012345678", "+1 (555) 123-4567", "555-123-4567", "+44 20 7946 0958", "01012345678"]
APNS_TOKEN = "a1b2c3d4" * 8
FCM_TOKEN = "dGVzdC10b2tlbi0x:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hMMoZTpl"
# Contacts herald's own validation accepts: internationalised emails, bare national
# numbers, URL-encoded E.164.
ACCEPTED = ["josé@example.com", "jane@bücher.example", "4155550123", "%2B14155550123"]
SECRETS = [EMAIL, APNS_TOKEN, FCM_TOKEN, *PHONES, *ACCEPTED]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("test-svc", "DEBUG", stream=stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.parametrize("secret", SECRETS)
def test_mask_removes_each_kind(secret: str) -> None:
    out = mask(f"user contact {secret} end")
    assert secret not in out
    assert out.startswith("user contact ") and out.endswith(" end")


def test_mask_keeps_ids_dates_and_numbers() -> None:
    text = (
        "delivery 6f1c1d0e-7c57-4b8e-9a55-2f6a8e3b9d10 at 2026-11-25T14:06:22Z "
        "from 127.0.0.1:9092 offset 1764079582000 partition 3 v1.2.3 ts 1764079582 "
        "lag 1234567890 id 20261125140622"
    )
    assert mask(text) == text


def test_message_args_extras_and_exception_are_masked(captured: io.StringIO) -> None:
    log = logging.getLogger("herald.test")
    try:
        raise RuntimeError(f"provider rejected {EMAIL} and {PHONES[0]}")
    except RuntimeError:
        log.exception(
            "send to %s failed (%s)",
            EMAIL,
            APNS_TOKEN,
            extra={
                "notification_id": "n-1",
                "delivery_id": "d-1",
                "address": PHONES[1],
                "detail": {"tokens": [FCM_TOKEN]},
            },
        )
    line = captured.getvalue().strip()
    assert "\n" not in line
    record = json.loads(line)
    assert record["service"] == "test-svc"
    assert record["level"] == "ERROR"
    assert record["logger"] == "herald.test"
    assert record["notification_id"] == "n-1" and record["delivery_id"] == "d-1"
    assert "***@example.com" in record["message"]
    assert "RuntimeError" in record["exc"]
    for secret in SECRETS:
        assert secret not in line


def test_exception_object_as_argument(captured: io.StringIO) -> None:
    logging.getLogger("x").warning("failed: %s", ValueError(f"bad token {FCM_TOKEN}"))
    assert FCM_TOKEN not in captured.getvalue()
    assert "<token:" in json.loads(captured.getvalue())["message"]


def test_mask_address_for_operators() -> None:
    assert mask_address(EMAIL) == "j***@example.com"
    assert mask_address("+821012345678") == "+82…78"
    assert APNS_TOKEN not in mask_address(APNS_TOKEN)


@pytest.mark.parametrize("contact", ACCEPTED)
def test_herald_accepts_what_the_masker_covers(contact: str) -> None:
    value = unquote(contact)
    (validate_email if "@" in value else normalize_phone)(value)
    assert contact not in mask(f"to={contact}&x=1")
