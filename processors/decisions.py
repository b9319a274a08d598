"""Pure decision logic: no I/O, so every rule is unit-tested on its own.

Each function answers one question about one request and returns a reason string (the
`reason` of the status event) or None when the request may proceed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.channels import MANDATORY_CATEGORIES, Channel, Platform, PreferenceChannel, Priority
from schemas.contract import Reason as Reason  # the values of `StatusEvent.reason`


def is_mandatory(category: str) -> bool:
    return category in MANDATORY_CATEGORIES


def is_urgent(priority: str, category: str) -> bool:
    """Urgent requests ignore quiet hours."""
    return priority == Priority.HIGH or is_mandatory(category)


def expired(expires_at_ms: int | None, now_ms: int) -> bool:
    return expires_at_ms is not None and expires_at_ms <= now_ms


def invalid_send_at(send_at_ms: int | None) -> bool:
    """A send time at or before the Unix epoch (-1, year 0001) is a bug, never "now"."""
    return send_at_ms is not None and send_at_ms <= 0


def scheduled_for_later(send_at_ms: int | None, now_ms: int) -> bool:
    return send_at_ms is not None and send_at_ms > now_ms


def opt_out_reason(
    category: str,
    channel: PreferenceChannel,
    preferences: Mapping[tuple[str, str], bool],
    *,
    unsubscribed_all: bool,
) -> str | None:
    """Why a user does not want `category` on `channel`, or None.

    Preferences map (channel, category) → opt_in, where category '*' covers every
    category; an exact category row wins over the wildcard; no row means opted in.
    Mandatory categories (security codes, fraud alerts) ignore every opt-out.
    """
    if is_mandatory(category):
        return None
    if unsubscribed_all:
        return Reason.UNSUBSCRIBED_ALL
    exact = preferences.get((channel, category))
    if exact is not None:
        return None if exact else Reason.OPTED_OUT
    wildcard = preferences.get((channel, "*"))
    if wildcard is False:
        return Reason.OPTED_OUT
    return None


def quiet_window_end(
    now: datetime, timezone: str | None, quiet_start: int | None, quiet_end: int | None
) -> datetime | None:
    """If `now` falls in the user's quiet hours, the UTC instant they end; else None.

    `quiet_start`/`quiet_end` are minutes after local midnight; the window is
    [start, end) and wraps midnight when start > end (22:00-07:00). An unknown time
    zone counts as UTC rather than dropping the user's quiet hours.
    """
    if quiet_start is None or quiet_end is None or quiet_start == quiet_end:
        return None
    try:
        tz = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    local = now.astimezone(tz)
    minute = local.hour * 60 + local.minute
    if quiet_start < quiet_end:
        inside = quiet_start <= minute < quiet_end
        end_day = local.date()
    else:
        inside = minute >= quiet_start or minute < quiet_end
        end_day = local.date() + timedelta(days=1) if minute >= quiet_start else local.date()
    if not inside:
        return None
    naive = datetime(end_day.year, end_day.month, end_day.day) + timedelta(minutes=quiet_end)
    # Wall-clock end in the user's zone; fold=0 takes the first of an ambiguous hour.
    return naive.replace(tzinfo=tz).astimezone(UTC)


def rate_check(
    entries: Mapping[str, int], notification_id: str, now_ms: int, limit: int, window_s: int
) -> tuple[bool, dict[str, int]]:
    """Sliding-window cap over distinct notifications: (allowed, entries to store).

    Entries map notification id → time it was counted. A notification already counted
    is allowed again, so reprocessing after a crash does not count it twice.
    """
    horizon = now_ms - window_s * 1000
    live = {nid: ts for nid, ts in entries.items() if ts > horizon}
    if notification_id in live:
        return True, live
    if len(live) >= limit:
        return False, live
    live[notification_id] = now_ms
    return True, live


def locale_candidates(override: str | None, user_locale: str | None, default: str) -> list[str]:
    """Locales to try in order: request override, user locale, their languages, default.

    `ko-KR` is tried as `ko-KR` then `ko`; duplicates are removed, order kept.
    """
    out: list[str] = []
    for loc in (override, user_locale):
        if not loc:
            continue
        out.append(loc)
        lang = loc.replace("_", "-").split("-", 1)[0]
        out.append(lang)
    out.append(default)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Device:
    device_id: str
    platform: str
    token: str


@dataclass(frozen=True)
class Target:
    """One delivery to make: a channel and an address (a device for push)."""

    channel: Channel
    address: str
    device_id: str | None = None

    @property
    def target_key(self) -> str:
        return self.device_id or str(self.channel)


def requested_channels(channels: Iterable[str]) -> tuple[list[PreferenceChannel], set[str]]:
    """Preference channels asked for (all when empty) and the push platforms to restrict to.

    Callers may name `push` (every device) or one platform's channel such as `push.ios`.
    """
    asked = list(channels)
    if not asked:
        return list(PreferenceChannel), set()
    prefs: list[PreferenceChannel] = []
    platforms: set[str] = set()
    for name in asked:
        if name in PreferenceChannel.__members__.values():
            pref = PreferenceChannel(name)
        elif name in Channel.__members__.values():
            ch = Channel(name)
            pref = ch.preference
            if pref is PreferenceChannel.PUSH:
                platforms.add(name)
        else:
            continue
        if pref not in prefs:
            prefs.append(pref)
    return prefs, platforms


def targets_for(
    channel: PreferenceChannel,
    *,
    email: str | None,
    phone: str | None,
    devices: Iterable[Device],
    push_channels: set[str],
    user_id: str = "",
) -> list[Target]:
    """Addresses for one preference channel: one per device for push; the user's own
    feed for in-app (every known user has one)."""
    if channel is PreferenceChannel.INAPP:
        return [Target(Channel.INAPP, user_id)] if user_id else []
    if channel is PreferenceChannel.EMAIL:
        return [Target(Channel.EMAIL, email)] if email else []
    if channel is PreferenceChannel.SMS:
        return [Target(Channel.SMS, phone)] if phone else []
    out = []
    for d in sorted(devices, key=lambda d: d.device_id):
        try:
            ch = Platform(d.platform).channel
        except ValueError:
            continue
        if push_channels and ch not in push_channels:
            continue
        if d.token:
            out.append(Target(ch, d.token, d.device_id))
    return out
