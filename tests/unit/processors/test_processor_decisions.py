"""The processor's pure decisions: quiet hours, rate windows, opt-outs, locales, targets."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.decisions import (
    Device,
    Reason,
    expired,
    is_urgent,
    locale_candidates,
    opt_out_reason,
    quiet_window_end,
    rate_check,
    requested_channels,
    scheduled_for_later,
    targets_for,
)
from schemas.channels import Channel, PreferenceChannel

H = 60  # minutes per hour


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class TestQuietHours:
    def test_inside_window_across_midnight_before_midnight(self) -> None:
        end = quiet_window_end(utc(2026, 1, 10, 23, 30), "UTC", 22 * H, 7 * H)
        assert end == utc(2026, 1, 11, 7, 0)

    def test_inside_window_across_midnight_after_midnight(self) -> None:
        end = quiet_window_end(utc(2026, 1, 11, 3, 0), "UTC", 22 * H, 7 * H)
        assert end == utc(2026, 1, 11, 7, 0)

    def test_outside_window(self) -> None:
        assert quiet_window_end(utc(2026, 1, 11, 12, 0), "UTC", 22 * H, 7 * H) is None

    def test_end_is_exclusive_start_inclusive(self) -> None:
        assert quiet_window_end(utc(2026, 1, 11, 7, 0), "UTC", 22 * H, 7 * H) is None
        assert quiet_window_end(utc(2026, 1, 11, 22, 0), "UTC", 22 * H, 7 * H) is not None

    def test_same_day_window(self) -> None:
        end = quiet_window_end(utc(2026, 1, 11, 13, 15), "UTC", 13 * H, 14 * H)
        assert end == utc(2026, 1, 11, 14, 0)

    def test_user_time_zone(self) -> None:
        # 14:00 UTC is 23:00 in Seoul (UTC+9): quiet until 07:00 Seoul = 22:00 UTC.
        end = quiet_window_end(utc(2026, 1, 11, 14, 0), "Asia/Seoul", 22 * H, 7 * H)
        assert end == utc(2026, 1, 11, 22, 0)
        # The same instant is 09:00 in New York: not quiet.
        assert quiet_window_end(utc(2026, 1, 11, 14, 0), "America/New_York", 22 * H, 7 * H) is None

    def test_dst_change_inside_window(self) -> None:
        # Berlin springs forward on 2026-03-29 at 02:00; 07:00 local is then 05:00 UTC.
        end = quiet_window_end(utc(2026, 3, 28, 23, 0), "Europe/Berlin", 22 * H, 7 * H)
        assert end == utc(2026, 3, 29, 5, 0)

    def test_no_quiet_hours(self) -> None:
        assert quiet_window_end(utc(2026, 1, 11, 3, 0), "UTC", None, 7 * H) is None
        assert quiet_window_end(utc(2026, 1, 11, 3, 0), "UTC", 7 * H, 7 * H) is None

    def test_unknown_zone_counts_as_utc(self) -> None:
        end = quiet_window_end(utc(2026, 1, 11, 3, 0), "Mars/Olympus", 22 * H, 7 * H)
        assert end == utc(2026, 1, 11, 7, 0)

    def test_urgency(self) -> None:
        assert is_urgent("high", "marketing")
        assert is_urgent("normal", "security")
        assert not is_urgent("normal", "marketing")


class TestRateWindow:
    def test_allows_up_to_limit_then_refuses(self) -> None:
        entries: dict[str, int] = {}
        for i in range(3):
            ok, entries = rate_check(entries, f"n{i}", 1_000 + i, limit=3, window_s=60)
            assert ok
        ok, entries = rate_check(entries, "n3", 1_010, limit=3, window_s=60)
        assert not ok
        assert set(entries) == {"n0", "n1", "n2"}

    def test_window_slides(self) -> None:
        entries = {"old": 0, "recent": 50_000}
        ok, entries = rate_check(entries, "new", 61_000, limit=2, window_s=60)
        assert ok
        assert set(entries) == {"recent", "new"}

    def test_same_notification_counted_once(self) -> None:
        ok, entries = rate_check({}, "n", 1, limit=1, window_s=60)
        assert ok
        ok, entries = rate_check(entries, "n", 2, limit=1, window_s=60)
        assert ok  # reprocessing after a crash is not a second notification
        assert entries == {"n": 1}


class TestOptOut:
    def test_exact_row_wins_over_wildcard(self) -> None:
        prefs = {("email", "*"): False, ("email", "transactional"): True}
        assert (
            opt_out_reason("transactional", PreferenceChannel.EMAIL, prefs, unsubscribed_all=False)
            is None
        )
        assert (
            opt_out_reason("marketing", PreferenceChannel.EMAIL, prefs, unsubscribed_all=False)
            == Reason.OPTED_OUT
        )

    def test_exact_opt_out(self) -> None:
        prefs = {("push", "marketing"): False}
        assert (
            opt_out_reason("marketing", PreferenceChannel.PUSH, prefs, unsubscribed_all=False)
            == Reason.OPTED_OUT
        )
        assert (
            opt_out_reason("marketing", PreferenceChannel.SMS, prefs, unsubscribed_all=False)
            is None
        )

    def test_global_unsubscribe(self) -> None:
        assert (
            opt_out_reason("social", PreferenceChannel.SMS, {}, unsubscribed_all=True)
            == Reason.UNSUBSCRIBED_ALL
        )

    def test_mandatory_category_ignores_opt_outs(self) -> None:
        prefs = {("sms", "*"): False, ("sms", "security"): False}
        assert (
            opt_out_reason("security", PreferenceChannel.SMS, prefs, unsubscribed_all=True) is None
        )


class TestLocale:
    def test_override_then_user_then_language_then_default(self) -> None:
        assert locale_candidates("de-AT", "ko-KR", "en") == ["de-AT", "de", "ko-KR", "ko", "en"]

    def test_no_override(self) -> None:
        assert locale_candidates(None, "ko-KR", "en") == ["ko-KR", "ko", "en"]

    def test_nothing_known(self) -> None:
        assert locale_candidates(None, None, "en") == ["en"]

    def test_no_duplicates(self) -> None:
        assert locale_candidates("en", "en-US", "en") == ["en", "en-US"]


class TestChannels:
    def test_empty_means_every_channel(self) -> None:
        prefs, platforms = requested_channels([])
        assert prefs == list(PreferenceChannel)
        assert platforms == set()

    def test_platform_channel_restricts_push(self) -> None:
        prefs, platforms = requested_channels(["push.ios", "sms", "bogus"])
        assert prefs == [PreferenceChannel.PUSH, PreferenceChannel.SMS]
        assert platforms == {"push.ios"}

    def test_one_target_per_device(self) -> None:
        devices = [
            Device("b", "ios", "t2"),
            Device("a", "ios", "t1"),
            Device("c", "android", "t3"),
            Device("d", "fax", "t4"),
            Device("e", "android", ""),
        ]
        targets = targets_for(
            PreferenceChannel.PUSH, email=None, phone=None, devices=devices, push_channels=set()
        )
        assert [(t.channel, t.device_id) for t in targets] == [
            (Channel.PUSH_IOS, "a"),
            (Channel.PUSH_IOS, "b"),
            (Channel.PUSH_ANDROID, "c"),
        ]
        only_ios = targets_for(
            PreferenceChannel.PUSH,
            email=None,
            phone=None,
            devices=devices,
            push_channels={"push.ios"},
        )
        assert {t.channel for t in only_ios} == {Channel.PUSH_IOS}

    def test_contacts(self) -> None:
        assert (
            targets_for(
                PreferenceChannel.SMS, email="a@b.c", phone=None, devices=[], push_channels=set()
            )
            == []
        )
        [t] = targets_for(
            PreferenceChannel.EMAIL, email="a@b.c", phone=None, devices=[], push_channels=set()
        )
        assert t.target_key == "email"


@pytest.mark.parametrize(
    ("at", "now", "result"), [(None, 5, False), (5, 5, True), (4, 5, True), (6, 5, False)]
)
def test_expired(at: int | None, now: int, result: bool) -> None:
    assert expired(at, now) is result


def test_scheduled_for_later() -> None:
    assert scheduled_for_later(10, 5)
    assert not scheduled_for_later(5, 5)
    assert not scheduled_for_later(None, 5)


ZONES = ("UTC", "Asia/Seoul", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe")


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    zone=st.sampled_from(ZONES),
    start=st.integers(0, 1439),
    end=st.integers(0, 1439),
)
def test_quiet_window_end_properties(now: datetime, zone: str, start: int, end: int) -> None:
    local = now.astimezone(ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    inside = start != end and (
        start <= minute < end if start < end else (minute >= start or minute < end)
    )
    result = quiet_window_end(now, zone, start, end)
    assert (result is not None) == inside
    if result is not None:
        assert result > now
        # Never more than a day away (a DST change adds at most an hour).
        assert (result - now).total_seconds() <= 25 * 3600
        # It is when the window ends in the user's wall-clock time (unless that minute
        # does not exist that day, skipped by a DST change).
        end_local = result.astimezone(ZoneInfo(zone))
        if end_local.utcoffset() == local.utcoffset():
            assert end_local.hour * 60 + end_local.minute == end
