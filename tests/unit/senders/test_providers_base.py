"""`Retry-After` parsing shared by the HTTP providers (RFC 9110 §10.2.3)."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from senders.providers.base import RetriableError, parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
    ],
)
def test_delta_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_http_date() -> None:
    when = formatdate(time.time() + 60, usegmt=True)
    wait = parse_retry_after(when)
    assert wait is not None and 55 <= wait <= 61
    assert parse_retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0


def test_errors_carry_what_the_runtime_needs() -> None:
    err = RetriableError("apns:429 TooManyRequests", provider="apns", status=429, retry_after=3)
    assert (err.retriable, err.retry_after, err.status, err.ambiguous) == (True, 3, 429, None)
    assert str(err) == "apns: apns:429 TooManyRequests"
