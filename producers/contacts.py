"""Contact registration (the seed's "contact info collection"): users, devices, preferences.

`Directory` is what the send API and the CLI call. Every method validates its input
(`ValidationError` naming the field), writes Cassandra (tables of `001_core.cql`), then
publishes a `UserChange` keyed by user id on the compacted `users.changes` topic so the
processor drops its cached copy of that user. The Cassandra write comes first: a reader
that sees the change event always finds the new row. If publishing fails the call raises
(`PublishError`, retriable) and the caller repeats it; every write here is idempotent.

Contacts never appear in a key in clear: `users_by_contact` is keyed by an HMAC of the
contact, and a device id is derived from the HMAC of its token, so registering the same
token twice yields the same device, and a token moving to another user leaves the old one.
"""

from __future__ import annotations

import asyncio
import re
import uuid
import zoneinfo
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from cassandra.cluster import Session
from cassandra.query import PreparedStatement

from infra.cassandra import aexecute
from producers.publisher import AsyncPublisher
from schemas.channels import Category, Platform, PreferenceChannel
from schemas.validation import (
    DEFAULT_PHONE_REGION,
    ValidationError,
    contact_hmac,
    normalize_phone,
    refuse_contact_as_id,
    validate_email,
    validate_token,
)

T = TypeVar("T")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
"""Leave a field as it is (None clears it)."""

_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_CATEGORY = re.compile(r"^(\*|[a-z][a-z0-9_.-]{0,63})$")
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
MINUTES_PER_DAY = 24 * 60


class ChangeKind:
    USER = "user"
    CONTACT = "contact"
    DEVICE = "device"
    PREFERENCE = "preference"
    DELETED = "deleted"


@dataclass(frozen=True)
class QuietHours:
    """Local-time window with no non-mandatory sends; may wrap midnight (22:00-07:00)."""

    start: int  # minutes after local midnight
    end: int

    @classmethod
    def parse(
        cls, value: str | dict[str, Any] | QuietHours, field: str = "quiet_hours"
    ) -> QuietHours:
        if isinstance(value, QuietHours):
            return value
        if isinstance(value, dict):
            start, end = value.get("start"), value.get("end")
        elif isinstance(value, str) and "-" in value:
            start, end = value.split("-", 1)
        else:
            raise ValidationError(field, 'expected "HH:MM-HH:MM" or {"start", "end"}')
        qh = cls(_minutes(start, f"{field}.start"), _minutes(end, f"{field}.end"))
        if qh.start == qh.end:
            raise ValidationError(field, "start and end are equal")
        return qh

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _minutes(value: Any, field: str) -> int:
    if isinstance(value, int) and 0 <= value < MINUTES_PER_DAY:
        return value
    m = _HHMM.match(str(value).strip()) if value is not None else None
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValidationError(field, "a local time HH:MM (00:00-23:59)")
    return int(m[1]) * 60 + int(m[2])


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def validate_locale(value: str, field: str = "locale") -> str:
    if not isinstance(value, str) or not _LOCALE.match(value):
        raise ValidationError(field, "a BCP 47 language tag such as en or ko-KR")
    return value.replace("_", "-")


def validate_timezone(value: str, field: str = "timezone") -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(field, "an IANA time zone name such as Europe/Paris") from None
    return value


def validate_category(value: str, field: str = "category") -> str:
    if not isinstance(value, str) or not _CATEGORY.match(value):
        known = ", ".join(c.value for c in Category)
        raise ValidationError(field, f"'*' or a lower-case category name ({known}, ...)")
    return value


def validate_user_id(value: str, field: str = "user_id", region: str = DEFAULT_PHONE_REGION) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValidationError(field, "1-200 characters")
    refuse_contact_as_id(value, field, region)
    return value


class Directory:
    """Users, contacts, devices and preferences; async (call from an event loop).

    Prepares its statements on construction (blocking, once)."""

    def __init__(
        self,
        session: Session,
        publisher: AsyncPublisher,
        *,
        hmac_key: bytes,
        phone_region: str = DEFAULT_PHONE_REGION,
    ) -> None:
        self.session = session
        self.publisher = publisher
        self.hmac_key = hmac_key
        self.phone_region = phone_region
        p = session.prepare
        self._get_user = p("SELECT * FROM users WHERE user_id = ?")
        self._delete_user = p("DELETE FROM users WHERE user_id = ?")
        self._touch_user = p("UPDATE users SET updated_at = ? WHERE user_id = ?")
        self._get_contact = p("SELECT user_id FROM users_by_contact WHERE contact_hmac = ?")
        self._put_contact = p(
            "INSERT INTO users_by_contact (contact_hmac, kind, user_id) VALUES (?, ?, ?)"
        )
        self._delete_contact_row = p("DELETE FROM users_by_contact WHERE contact_hmac = ?")
        self._devices = p("SELECT * FROM devices_by_user WHERE user_id = ?")
        self._device = p("SELECT * FROM devices_by_user WHERE user_id = ? AND device_id = ?")
        self._put_device = p(
            "INSERT INTO devices_by_user (user_id, device_id, platform, device_token, app_id,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._delete_device = p("DELETE FROM devices_by_user WHERE user_id = ? AND device_id = ?")
        self._delete_devices = p("DELETE FROM devices_by_user WHERE user_id = ?")
        self._prefs = p("SELECT channel, category, opt_in FROM preferences WHERE user_id = ?")
        self._put_pref = p(
            "INSERT INTO preferences (user_id, channel, category, opt_in, updated_at)"
            " VALUES (?, ?, ?, ?, ?)"
        )
        self._delete_prefs = p("DELETE FROM preferences WHERE user_id = ?")
        self._updates: dict[tuple[str, ...], PreparedStatement] = {}

    async def _q(self, stmt: PreparedStatement, *params: Any) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params)

    async def _drop_contact(self, kind: str, value: str, user_id: str) -> None:
        # Only this user's mapping: a shared address may since point at someone else.
        key = self._hmac(kind, value)
        rows = await self._q(self._get_contact, key)
        if rows and rows[0]["user_id"] == user_id:
            await self._q(self._delete_contact_row, key)

    def _hmac(self, kind: str, value: str) -> str:
        return contact_hmac(kind, value, self.hmac_key)

    def device_id(self, token: str) -> str:
        """Deterministic and PII-free: the same token is always the same device."""
        return str(uuid.UUID(hex=self._hmac("token", token)[:32]))

    # reads

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The user's row with `devices` (tokens left out) and `preferences`; None if unknown."""
        rows = await self._q(self._get_user, user_id)
        if not rows:
            return None
        row = rows[0]
        devices = await self._q(self._devices, user_id)
        prefs = await self._q(self._prefs, user_id)
        quiet = (
            str(QuietHours(row["quiet_start"], row["quiet_end"]))
            if row.get("quiet_start") is not None and row.get("quiet_end") is not None
            else None
        )
        return {
            "user_id": user_id,
            "email": row.get("email"),
            "phone": row.get("phone"),
            "locale": row.get("locale"),
            "timezone": row.get("timezone"),
            "quiet_hours": quiet,
            "unsubscribed_all": bool(row.get("unsubscribed_all")),
            "devices": [
                {"device_id": d["device_id"], "platform": d["platform"], "app_id": d["app_id"]}
                for d in devices
            ],
            "preferences": [
                {"channel": p["channel"], "category": p["category"], "opt_in": p["opt_in"]}
                for p in prefs
            ],
        }

    async def user_for_contact(self, kind: str, value: str) -> str | None:
        rows = await self._q(self._get_contact, self._hmac(kind, value))
        return rows[0]["user_id"] if rows else None

    # writes

    async def set_user(
        self,
        user_id: str,
        *,
        email: str | _Unset | None = UNSET,
        phone: str | _Unset | None = UNSET,
        locale: str | _Unset | None = UNSET,
        timezone: str | _Unset | None = UNSET,
        quiet_hours: str | dict[str, Any] | QuietHours | _Unset | None = UNSET,
        unsubscribed_all: bool | _Unset = UNSET,
    ) -> dict[str, Any]:
        """Create or update a user; only the fields given change, None clears one.
        Returns the stored values of the fields given (normalized: E.164, etc.)."""
        validate_user_id(user_id, region=self.phone_region)
        cols: dict[str, Any] = {}
        if not isinstance(email, _Unset):
            cols["email"] = None if email is None else validate_email(email, "email")
        if not isinstance(phone, _Unset):
            cols["phone"] = (
                None if phone is None else normalize_phone(phone, "phone", self.phone_region)
            )
        if not isinstance(locale, _Unset):
            cols["locale"] = None if locale is None else validate_locale(locale)
        if not isinstance(timezone, _Unset):
            cols["timezone"] = None if timezone is None else validate_timezone(timezone)
        if not isinstance(quiet_hours, _Unset):
            qh = None if quiet_hours is None else QuietHours.parse(quiet_hours)
            cols["quiet_start"] = qh.start if qh else None
            cols["quiet_end"] = qh.end if qh else None
        if not isinstance(unsubscribed_all, _Unset):
            if not isinstance(unsubscribed_all, bool):
                raise ValidationError("unsubscribed_all", "must be true or false")
            cols["unsubscribed_all"] = unsubscribed_all

        old = (await self._q(self._get_user, user_id)) or [{}]
        await self._update_user(user_id, cols)
        for kind in ("email", "phone"):
            if kind not in cols or old[0].get(kind) == cols[kind]:
                continue
            if old[0].get(kind):
                await self._drop_contact(kind, old[0][kind], user_id)
            if cols[kind]:
                await self._q(self._put_contact, self._hmac(kind, cols[kind]), kind, user_id)
        contact = "email" in cols or "phone" in cols
        await self.publisher.publish_change(
            user_id, ChangeKind.CONTACT if contact else ChangeKind.USER
        )
        out = {k: v for k, v in cols.items() if not k.startswith("quiet_")}
        if "quiet_start" in cols:
            out["quiet_hours"] = (
                None
                if cols["quiet_start"] is None
                else str(QuietHours(cols["quiet_start"], cols["quiet_end"]))
            )
        return out

    async def _update_user(self, user_id: str, cols: dict[str, Any]) -> None:
        names = (*sorted(cols), "updated_at")
        stmt = self._updates.get(names)
        if stmt is None:
            sets = ", ".join(f"{n} = ?" for n in names)
            stmt = self.session.prepare(f"UPDATE users SET {sets} WHERE user_id = ?")
            self._updates[names] = stmt
        values = [cols[n] for n in names[:-1]]
        await self._q(stmt, *values, datetime.now(UTC), user_id)

    async def delete_user(self, user_id: str) -> bool:
        """Forget a user: row, reverse lookups, devices, preferences. False if unknown."""
        rows = await self._q(self._get_user, user_id)
        devices = await self._q(self._devices, user_id)
        for kind in ("email", "phone"):
            if rows and rows[0].get(kind):
                await self._drop_contact(kind, rows[0][kind], user_id)
        for d in devices:
            await self._drop_contact("token", d["device_token"], user_id)
        await self._q(self._delete_devices, user_id)
        await self._q(self._delete_prefs, user_id)
        await self._q(self._delete_user, user_id)
        await self.publisher.publish_change(user_id, ChangeKind.DELETED)
        return bool(rows or devices)

    async def register_device(
        self, user_id: str, platform: Platform | str, token: str, app_id: str
    ) -> str:
        """Add (or refresh) a device; returns its device id. A token registered to another
        user before moves to this one (a phone changed hands, an app re-login)."""
        validate_user_id(user_id, region=self.phone_region)
        token = validate_token(platform, token, "token")
        platform = Platform(platform)
        if not isinstance(app_id, str) or not app_id.strip() or len(app_id) > 200:
            raise ValidationError("app_id", "1-200 characters (the app's bundle or package id)")
        device_id = self.device_id(token)
        previous = await self.user_for_contact("token", token)
        if previous is not None and previous != user_id:
            await self._q(self._delete_device, previous, device_id)
            await self.publisher.publish_change(previous, ChangeKind.DEVICE)
        await self._q(
            self._put_device, user_id, device_id, str(platform), token, app_id, datetime.now(UTC)
        )
        await self._q(self._put_contact, self._hmac("token", token), "token", user_id)
        await self._q(self._touch_user, datetime.now(UTC), user_id)
        await self.publisher.publish_change(user_id, ChangeKind.DEVICE)
        return device_id

    async def unregister_device(self, user_id: str, device_id: str) -> bool:
        rows = await self._q(self._device, user_id, device_id)
        if not rows:
            return False
        await self._q(self._delete_device, user_id, device_id)
        await self._drop_contact("token", rows[0]["device_token"], user_id)
        await self.publisher.publish_change(user_id, ChangeKind.DEVICE)
        return True

    async def set_preferences(
        self, user_id: str, prefs: Iterable[tuple[PreferenceChannel | str, str, bool]]
    ) -> list[dict[str, Any]]:
        """Opt in or out per (channel, category); category '*' covers every category.
        Mandatory categories (security) are sent regardless: the processor decides."""
        validate_user_id(user_id, region=self.phone_region)
        rows = []
        for i, (channel, category, opt_in) in enumerate(prefs):
            try:
                ch = PreferenceChannel(channel)
            except ValueError:
                allowed = ", ".join(c.value for c in PreferenceChannel)
                raise ValidationError(f"[{i}].channel", f"must be one of {allowed}") from None
            validate_category(category, f"[{i}].category")
            if not isinstance(opt_in, bool):
                raise ValidationError(f"[{i}].opt_in", "must be true or false")
            rows.append({"channel": str(ch), "category": category, "opt_in": opt_in})
        if not rows:
            raise ValidationError("preferences", "give at least one preference")
        now = datetime.now(UTC)
        for r in rows:
            await self._q(self._put_pref, user_id, r["channel"], r["category"], r["opt_in"], now)
        await self._q(self._touch_user, now, user_id)
        await self.publisher.publish_change(user_id, ChangeKind.PREFERENCE)
        return rows

    async def set_preference(
        self, user_id: str, channel: PreferenceChannel | str, category: str, opt_in: bool
    ) -> None:
        await self.set_preferences(user_id, [(channel, category, opt_in)])


class SyncDirectory:
    """Blocking facade over `Directory` for scripts and CLIs (not for use inside a loop)."""

    def __init__(self, session: Session, publisher: AsyncPublisher, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self.directory = Directory(session, publisher, **kwargs)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.directory, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr
        return lambda *a, **kw: self.run(attr(*a, **kw))

    def close(self) -> None:
        self.run(self.directory.publisher.close())
        self._loop.close()
