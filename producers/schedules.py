"""Recurring schedules (cron) owned by a source service, and the loop that fires them.

A schedule is a five-field cron expression read in an IANA time zone plus the request to
publish at each firing. Each firing publishes a normal request whose event id is
`cron:<owner>:<schedule_id>:<fire time, UTC ISO 8601>`: the same firing always has the same
id, so publishing it twice (a crash between publishing and recording, two scheduler
replicas) is dropped by the processor's request dedup, while two owners' schedules of the
same name never are.

Progress is `last_fired_at` on the schedule's row, written after the publish succeeded.
Misfire policy after downtime: only the latest missed firing is sent, and only if it is
at most `misfire_grace_s` old; earlier missed firings are skipped (logged with a count).
A schedule never fires for times before it was created.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cassandra.cluster import Session
from croniter import croniter

from infra.cassandra import aexecute
from producers.contacts import validate_timezone
from producers.publisher import AsyncPublisher, PublishResult
from producers.request import NotificationRequest, parse_request, validate_request
from schemas.validation import ValidationError

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# Filled in per firing; a template that sets them is refused.
_PER_FIRING = ("event_id", "created_at", "send_at")


def event_id_for(owner: str, schedule_id: str, fire_time: datetime) -> str:
    # Unambiguous although an owner may contain ':': schedule ids cannot (`_ID`), and the
    # fire time is a fixed-width suffix.
    return f"cron:{owner}:{schedule_id}:{fire_time.astimezone(UTC).isoformat()}"


def _utc(value: datetime) -> datetime:
    # The driver returns naive UTC datetimes.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class RecurringSchedule:
    owner: str
    schedule_id: str
    cron: str
    timezone: str
    request: dict[str, Any]
    created_at: datetime
    last_fired_at: datetime | None = None

    def latest_due(self, now: datetime) -> datetime | None:
        """The latest fire time at or before `now` (UTC), or None before the first one."""
        local = now.astimezone(ZoneInfo(self.timezone))
        prev: datetime = croniter(self.cron, local).get_prev(datetime)
        nxt: datetime = croniter(self.cron, prev).get_next(datetime)
        latest = nxt if nxt <= local else prev  # croniter's get_prev excludes `now` itself
        return latest.astimezone(UTC)

    def due(self, now: datetime, grace: timedelta) -> tuple[datetime | None, datetime | None]:
        """(fire time to publish or None, fire time to record as done or None)."""
        latest = self.latest_due(now)
        start = self.last_fired_at or self.created_at
        if latest is None or latest <= start:
            return None, None
        if now - latest > grace:
            return None, latest  # too late to be useful: skip, but never reconsider
        return latest, latest

    def build(self, fire_time: datetime, now: datetime) -> NotificationRequest:
        data = {
            **self.request,
            "source": self.owner,
            "event_id": event_id_for(self.owner, self.schedule_id, fire_time),
            "created_at": now,
        }
        req = parse_request(data, "request.")
        req.metadata.setdefault("herald.schedule_id", self.schedule_id)
        req.metadata.setdefault("herald.fire_time", fire_time.isoformat())
        return req

    def as_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "schedule_id": self.schedule_id,
            "cron": self.cron,
            "timezone": self.timezone,
            "request": self.request,
            "created_at": self.created_at.isoformat(),
            "last_fired_at": self.last_fired_at.isoformat() if self.last_fired_at else None,
        }


def _row(row: dict[str, Any]) -> RecurringSchedule:
    return RecurringSchedule(
        owner=row["owner"],
        schedule_id=row["schedule_id"],
        cron=row["cron"],
        timezone=row["timezone"],
        request=json.loads(row["request"]),
        created_at=_utc(row["created_at"]),
        last_fired_at=_utc(row["last_fired_at"]) if row.get("last_fired_at") else None,
    )


class RecurringStore:
    """`herald.recurring_schedules`: create, list, delete, and progress of firings."""

    def __init__(self, session: Session) -> None:
        self.session = session
        p = session.prepare
        self._put = p(
            "INSERT INTO recurring_schedules (owner, schedule_id, cron, timezone, request,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._get = p("SELECT * FROM recurring_schedules WHERE owner = ? AND schedule_id = ?")
        self._list = p("SELECT * FROM recurring_schedules WHERE owner = ?")
        self._all = p("SELECT * FROM recurring_schedules")
        self._delete = p("DELETE FROM recurring_schedules WHERE owner = ? AND schedule_id = ?")
        # IF EXISTS: recording a firing must not resurrect a schedule deleted meanwhile.
        self._fired = p(
            "UPDATE recurring_schedules SET last_fired_at = ?"
            " WHERE owner = ? AND schedule_id = ? IF EXISTS"
        )

    async def create(
        self,
        owner: str,
        cron: str,
        request: dict[str, Any],
        *,
        timezone: str = "UTC",
        schedule_id: str | None = None,
        now: datetime | None = None,
    ) -> RecurringSchedule:
        """Validate and store; raises `ValidationError` naming the field, or
        `ValueError` when `schedule_id` is taken."""
        schedule_id = schedule_id or str(uuid.uuid4())
        if not _ID.match(schedule_id):
            raise ValidationError("schedule_id", "1-100 of letters, digits, '_', '-', '.'")
        if not isinstance(cron, str) or not croniter.is_valid(cron) or len(cron.split()) != 5:
            raise ValidationError("cron", "a five-field cron expression, e.g. '0 9 * * mon'")
        validate_timezone(timezone)
        if not isinstance(request, dict):
            raise ValidationError("request", "must be a JSON object")
        for name in _PER_FIRING:
            if name in request:
                raise ValidationError(f"request.{name}", "set per firing; leave it out")
        schedule = RecurringSchedule(
            owner, schedule_id, cron, timezone, request, _utc(now or datetime.now(UTC))
        )
        probe = schedule.build(schedule.created_at, schedule.created_at)
        try:
            validate_request(probe)
        except ValidationError as err:
            raise ValidationError(f"request.{err.field}", err.message) from None
        rows = await aexecute(
            self.session,
            self._put,
            (
                owner,
                schedule_id,
                cron,
                timezone,
                json.dumps(request, separators=(",", ":"), default=str),
                schedule.created_at,
            ),
        )
        if not rows[0]["[applied]"]:
            raise ValueError(f"schedule {schedule_id} already exists")
        return schedule

    async def get(self, owner: str, schedule_id: str) -> RecurringSchedule | None:
        rows = await aexecute(self.session, self._get, (owner, schedule_id))
        return _row(rows[0]) if rows else None

    async def of_owner(self, owner: str) -> list[RecurringSchedule]:
        return [_row(r) for r in await aexecute(self.session, self._list, (owner,))]

    async def delete(self, owner: str, schedule_id: str) -> bool:
        if await self.get(owner, schedule_id) is None:
            return False
        await aexecute(self.session, self._delete, (owner, schedule_id))
        return True

    async def every(self, owners: list[str] | None = None) -> list[RecurringSchedule]:
        """Every schedule (of `owners`). A full scan, paged by the driver: schedules are
        few (thousands), and the firing loop reads them once per tick."""
        if owners:
            out = []
            for owner in owners:
                out.extend(await self.of_owner(owner))
            return out
        # Every page is fetched in the worker thread: iterating a result set pages lazily.
        rows = await asyncio.to_thread(lambda: list(self.session.execute(self._all)))
        return [_row(r) for r in rows]

    async def mark_fired(self, s: RecurringSchedule, fire_time: datetime) -> bool:
        rows = await aexecute(self.session, self._fired, (fire_time, s.owner, s.schedule_id))
        return bool(rows[0]["[applied]"])


class RecurringScheduler:
    """The firing loop (`python -m producers scheduler`)."""

    def __init__(
        self,
        store: RecurringStore,
        publisher: AsyncPublisher,
        *,
        misfire_grace: timedelta = timedelta(minutes=15),
        owners: list[str] | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.misfire_grace = misfire_grace
        self.owners = owners or []

    async def tick(self, now: datetime | None = None) -> list[PublishResult]:
        """Publish every firing due at `now`; returns what was published."""
        now = now or datetime.now(UTC)
        published = []
        for s in await self.store.every(self.owners):
            try:
                fire, done = s.due(now, self.misfire_grace)
                if fire is not None:
                    published.append(await self.publisher.publish(s.build(fire, now)))
                if done is not None:
                    if fire is None:
                        log.warning(
                            "missed firing skipped (older than the misfire grace)",
                            extra={"schedule_id": s.schedule_id, "fire_time": done.isoformat()},
                        )
                    await self.store.mark_fired(s, done)
            except Exception:
                # One broken schedule must not stop the others; it is retried next tick.
                log.exception("firing failed", extra={"schedule_id": s.schedule_id})
        return published

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
