"""Funnel aggregation over status events."""

from __future__ import annotations

from typing import Any

from herald.ops.stats import aggregate
from schemas.events import status_event


def ev(
    outcome: str,
    n: int,
    *,
    channel: str | None = "email",
    category: str = "marketing",
    reason: str | None = None,
    at: int = 1_000,
) -> dict[str, Any]:
    return status_event(
        notification_id=f"n{n}",
        event_id=f"e{n}",
        user_id="u",
        category=category,
        outcome=outcome,
        reason=reason,
        delivery_id=f"d{n}-{channel}" if channel else None,
        channel=channel,
        occurred_at=at,
    )


def test_funnel_per_category_and_channel() -> None:
    events = [
        ev("accepted", 1, channel=None),
        ev("accepted", 2, channel=None),
        ev("accepted", 3, channel=None),
        ev("dropped", 3, channel=None, reason="opted_out"),
        ev("sent", 1),
        ev("sent", 2),
        ev("failed", 4),
        ev("dead_lettered", 5),
        ev("opened", 1),
        ev("opened", 1),  # the same pixel loaded twice counts once
        ev("clicked", 1),
        ev("sent", 1, channel="push.ios"),
        ev("delivered", 1, channel="push.ios"),
        ev("dropped", 6, channel="sms", category="security", reason="no_contact"),
        ev("sent", 7, at=5_000),  # outside the window
        ev("digested", 8, channel=None, category="social", reason="social"),
        ev("digested", 9, channel=None, category="social", reason="social"),
        ev("sent", 10, channel="inapp", category="social"),
        ev("seen", 10, channel="inapp", category="social"),
        ev("read", 10, channel="inapp", category="social"),
    ]
    rows = {(r.category, r.channel): r for r in aggregate(events, start_ms=0, end_ms=2_000)}
    assert set(rows) == {
        ("marketing", "-"),
        ("marketing", "email"),
        ("marketing", "push.ios"),
        ("security", "sms"),
        ("social", "-"),
        ("social", "inapp"),
    }
    assert rows["social", "-"].digested == 2
    inapp = rows["social", "inapp"].as_dict()
    assert (inapp["sent"], inapp["seen"], inapp["read"], inapp["read_rate"]) == (1, 1, 1, 1.0)
    req = rows["marketing", "-"]
    assert req.requested == 3 and req.dropped == {"opted_out": 1}
    email = rows["marketing", "email"].as_dict()
    assert (email["sent"], email["failed"], email["dead_lettered"]) == (2, 1, 1)
    assert (email["opened"], email["clicked"]) == (1, 1)
    assert email["failure_rate"] == 0.5
    assert email["open_rate"] == 0.5 and email["click_rate"] == 0.5
    assert email["click_to_open_rate"] == 1.0
    assert email["delivery_rate"] == 0.0
    ios = rows["marketing", "push.ios"].as_dict()
    assert ios["delivery_rate"] == 1.0 and ios["open_rate"] == 0.0
    assert rows["security", "sms"].dropped == {"no_contact": 1}


def test_filters_and_empty_rates() -> None:
    events = [
        ev("sent", 1),
        ev("sent", 2, channel="push.android"),
        ev("sent", 3, category="social", channel="push.ios"),
        ev("accepted", 4, channel=None),
    ]
    rows = aggregate(events, start_ms=0, end_ms=2_000, channel="push", category="marketing")
    assert [(r.category, r.channel, r.sent) for r in rows] == [
        ("marketing", "-", 0),
        ("marketing", "push.android", 1),
    ]
    assert rows[0].rates()["open_rate"] is None
