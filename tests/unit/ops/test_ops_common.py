"""Time windows, topic names and filters of the replay and redrive tools."""

from __future__ import annotations

import pytest

from herald.ops.common import channel_matches, request_matches, topic_ref
from herald.ops.ledger import REDRIVE_FINAL, REPLAY_FINAL, skip_reason
from herald.ops.slices import parse_time

NOW = 1_764_079_582_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("90m", NOW - 90 * 60_000),
        ("-2h", NOW - 7_200_000),
        ("1d ago", NOW - 86_400_000),
        ("2025-11-25T14:06:22Z", 1_764_079_582_000),
        ("2025-11-25T14:06:22", 1_764_079_582_000),
        ("2025-11-25T15:06:22+01:00", 1_764_079_582_000),
        ("1764079582000", 1_764_079_582_000),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, now_ms=NOW) == expected


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday-ish", now_ms=NOW)


@pytest.mark.parametrize(
    ("text", "dlq", "name", "main", "lane"),
    [
        ("requests", False, "notifications.requested", "notifications.requested", "main"),
        ("requests", True, "notifications.requested.dlq", "notifications.requested", "dlq"),
        ("email", False, "notifications.email", "notifications.email", "main"),
        ("push.ios", True, "notifications.push.ios.dlq", "notifications.push.ios", "dlq"),
        (
            "notifications.sms.priority",
            False,
            "notifications.sms.priority",
            "notifications.sms.priority",
            "priority",
        ),
        (
            "notifications.push.android.retry.2",
            False,
            "notifications.push.android.retry.2",
            "notifications.push.android",
            "retry",
        ),
    ],
)
def test_topic_ref(text: str, dlq: bool, name: str, main: str, lane: str) -> None:
    ref = topic_ref(text, dlq=dlq)
    assert (ref.name, ref.main, ref.lane) == (name, main, lane)


@pytest.mark.parametrize("text", ["notifications.fax", "orders", "notifications.status"])
def test_topic_ref_rejects_unknown(text: str) -> None:
    with pytest.raises(ValueError, match="unknown topic"):
        topic_ref(text)


def test_filters() -> None:
    assert channel_matches(None, "sms")
    assert channel_matches("push", "push.ios") and not channel_matches("push", "sms")
    assert channel_matches("push.ios", "push.ios") and not channel_matches("push.ios", "push.web")
    assert request_matches("email", []) and request_matches("email", ["email", "sms"])
    assert request_matches("push.ios", ["push"]) and not request_matches("sms", ["push"])


def test_skip_reasons() -> None:
    assert skip_reason(None, REPLAY_FINAL) is None
    assert skip_reason("sent", REPLAY_FINAL) == "already_sent"
    assert skip_reason("sending", REPLAY_FINAL) == "in_flight"
    assert skip_reason("retrying", REPLAY_FINAL) == "in_retry"
    assert skip_reason("dead_lettered", REPLAY_FINAL) == "already_dead_lettered"
    # Redrive exists to resend dead letters.
    assert skip_reason("dead_lettered", REDRIVE_FINAL) is None


def test_topic_ref_with_prefix() -> None:
    ref = topic_ref("sms", prefix="stage.")
    assert (ref.name, ref.main) == ("stage.notifications.sms", "stage.notifications.sms")
    retry = topic_ref("stage.notifications.sms.retry.1", prefix="stage.")
    assert (retry.lane, retry.main) == ("retry", "stage.notifications.sms")
    assert topic_ref("requests", dlq=True, prefix="stage.").main == "stage.notifications.requested"
