"""When a recurring schedule fires, and with which event id (no Cassandra needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from producers.schedules import RecurringSchedule, event_id_for
from schemas.validation import ValidationError

GRACE = timedelta(minutes=15)
REQ = {"user_id": "u", "category": "marketing", "template_id": "digest"}


def sched(
    cron: str, created: datetime, last: datetime | None = None, tz: str = "UTC"
) -> RecurringSchedule:
    return RecurringSchedule("jobs", "s1", cron, tz, REQ, created, last)


def at(h: int, m: int, s: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 3, day, h, m, s, tzinfo=UTC)


def test_fires_once_per_boundary() -> None:
    s = sched("*/5 * * * *", at(8, 0))
    assert s.due(at(8, 4, 59), GRACE) == (None, None)
    assert s.due(at(8, 5), GRACE) == (at(8, 5), at(8, 5))  # exactly on the boundary
    fired = sched("*/5 * * * *", at(8, 0), last=at(8, 5))
    assert fired.due(at(8, 9), GRACE) == (None, None)
    assert fired.due(at(8, 10, 1), GRACE) == (at(8, 10), at(8, 10))


def test_never_fires_for_times_before_creation() -> None:
    assert sched("0 9 * * *", at(9, 0, 30)).due(at(9, 5), GRACE) == (None, None)


def test_only_the_latest_missed_firing_within_grace() -> None:
    s = sched("* * * * *", at(8, 0), last=at(8, 1))
    assert s.due(at(8, 30, 10), GRACE) == (at(8, 30), at(8, 30))
    daily = sched("0 9 * * *", at(0, 0, day=1), last=at(9, 0, day=1))
    assert daily.due(at(10, 0, day=3), GRACE) == (None, at(9, 0, day=3))  # skipped, recorded


def test_cron_is_read_in_the_schedule_time_zone() -> None:
    seoul = sched("0 9 * * *", at(0, 0, day=1), tz="Asia/Seoul")
    # 09:00 in Seoul is 00:00 UTC.
    assert seoul.due(at(0, 0, 30), GRACE) == (at(0, 0), at(0, 0))


def test_built_requests_have_deterministic_event_ids() -> None:
    s = sched("0 9 * * *", at(0, 0, day=1))
    a = s.build(at(9, 0), at(9, 0, 1))
    b = s.build(at(9, 0), at(9, 0, 40))
    assert a.event_id == b.event_id == event_id_for("jobs", "s1", at(9, 0))
    assert a.event_id == "cron:jobs:s1:2026-03-02T09:00:00+00:00"
    assert a.notification_id == b.notification_id
    assert a.source == "jobs" and a.metadata["herald.schedule_id"] == "s1"


def test_bad_template_names_the_request_field() -> None:
    s = RecurringSchedule("jobs", "s1", "* * * * *", "UTC", {"category": "c"}, at(0, 0))
    with pytest.raises(ValidationError) as err:
        s.build(at(1, 0), at(1, 0))
    assert err.value.field == "request.user_id"


def test_owners_reusing_a_schedule_id_get_distinct_event_ids() -> None:
    mine = sched("0 9 * * *", at(0, 0, day=1))
    theirs = RecurringSchedule("shop", "s1", mine.cron, "UTC", mine.request, mine.created_at)
    # One event id would let the processor's dedup drop the other owner's firing.
    assert mine.build(at(9, 0), at(9, 0)).event_id != theirs.build(at(9, 0), at(9, 0)).event_id
