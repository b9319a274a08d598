"""Durable hold of requests until they are due, and the releaser that sends them back.

The processor holds a request (its bytes, unchanged) when it asks to be sent later
(`send_at`) or falls in the user's quiet hours. Held requests live in Cassandra, bucketed
by due minute (`herald.scheduled_requests`), so they survive restarts. The releaser
republishes due ones to the request topic they came from (the store's `scope`) with the
header `herald.released: 1`; the processor then decides again (opt-outs, expiry, rate
limits may have changed while it waited).

State per event id (`herald.scheduled_by_event`): held → releasing → released, or
held → canceled. Cancel and release race through lightweight transactions on that row,
so a canceled request is never released. Release is at-least-once: a crash between
publishing and marking `released` publishes again on the next pass, and the processor
drops the second copy (its request dedup says `done`), so double release is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cassandra.cluster import Session

from infra.cassandra import aexecute
from schemas.contract import Header

log = logging.getLogger(__name__)

HELD, RELEASING, RELEASED, CANCELED = "held", "releasing", "released", "canceled"
# Buckets stay scannable this many minutes after they pass, for clocks that disagree.
_SKEW_MINUTES = 2
_MAX_BUCKETS_PER_PASS = 600
_CONCURRENCY = 64

Publish = Callable[[str, bytes, Sequence[tuple[str, bytes]]], Awaitable[None]]


def bucket_of(ms: int) -> int:
    return ms // 60_000


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(value: datetime) -> int:
    if value.tzinfo is None:  # the driver returns naive UTC datetimes
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


@dataclass(frozen=True)
class Held:
    event_id: str
    user_id: str
    due_at_ms: int
    reason: str
    payload: bytes


class ScheduleStore:
    """Held requests of one scope (the request topic they return to)."""

    def __init__(self, session: Session, scope: str) -> None:
        self._s = session
        self.scope = scope
        self._floor: int | None = None  # the cursor is known to be at or below this
        self._cursor_lock = asyncio.Lock()
        ks = session.keyspace or "herald"
        self._insert_state = session.prepare(
            f"INSERT INTO {ks}.scheduled_by_event (event_id, scope, bucket, due_at, state,"
            " updated_at) VALUES (?, ?, ?, ?, 'held', ?) IF NOT EXISTS"
        )
        self._rehold = session.prepare(
            f"UPDATE {ks}.scheduled_by_event SET bucket = ?, due_at = ?, state = 'held',"
            " updated_at = ? WHERE event_id = ? IF state = ?"
        )
        self._transition = session.prepare(
            f"UPDATE {ks}.scheduled_by_event SET state = ?, updated_at = ?"
            " WHERE event_id = ? IF state = ?"
        )
        self._get_state = session.prepare(
            f"SELECT state, due_at FROM {ks}.scheduled_by_event WHERE event_id = ?"
        )
        self._insert_row = session.prepare(
            f"INSERT INTO {ks}.scheduled_requests (scope, bucket, due_at, event_id, user_id,"
            " reason, payload) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._due_rows = session.prepare(
            f"SELECT due_at, event_id, user_id, reason, payload FROM {ks}.scheduled_requests"
            " WHERE scope = ? AND bucket = ? AND due_at <= ?"
        )
        self._delete_row = session.prepare(
            f"DELETE FROM {ks}.scheduled_requests WHERE scope = ? AND bucket = ?"
            " AND due_at = ? AND event_id = ?"
        )
        self._get_cursor = session.prepare(
            f"SELECT bucket FROM {ks}.scheduler_cursor WHERE scope = ?"
        )
        self._init_cursor = session.prepare(
            f"INSERT INTO {ks}.scheduler_cursor (scope, bucket) VALUES (?, ?) IF NOT EXISTS"
        )
        # Both moves are conditional: a hold lowering the cursor and a releaser advancing
        # it past that hold's bucket must not both win.
        self._lower_cursor = session.prepare(
            f"UPDATE {ks}.scheduler_cursor SET bucket = ? WHERE scope = ? IF bucket > ?"
        )
        self._advance_cursor = session.prepare(
            f"UPDATE {ks}.scheduler_cursor SET bucket = ? WHERE scope = ? IF bucket = ?"
        )

    async def hold(
        self, *, event_id: str, user_id: str, payload: bytes, due_at_ms: int, reason: str
    ) -> bool:
        """Hold a request until `due_at_ms`. Idempotent; holding again moves the due time.

        Returns False (and holds nothing) when the event id was canceled.
        """
        now = datetime.now(UTC)
        # A due time already past goes in the current bucket, which the releaser reads.
        bucket = max(bucket_of(due_at_ms), bucket_of(int(now.timestamp() * 1000)))
        await self._cursor_at_most(bucket)
        for _ in range(5):
            rows = await aexecute(
                self._s,
                self._insert_state,
                (event_id, self.scope, bucket, _ts(due_at_ms), now),
            )
            if rows[0]["[applied]"]:
                break
            current = rows[0].get("state")
            if current == CANCELED:
                return False
            rows = await aexecute(
                self._s, self._rehold, (bucket, _ts(due_at_ms), now, event_id, current)
            )
            if rows[0]["[applied]"]:
                break
        else:
            raise RuntimeError(f"schedule state of {event_id} keeps changing; retry")
        # The row goes in after the state: a crash in between leaves a state with no row,
        # and the caller (whose input offset is not committed yet) holds it again.
        await aexecute(
            self._s,
            self._insert_row,
            (self.scope, bucket, _ts(due_at_ms), event_id, user_id, reason, payload),
        )
        return True

    async def _cursor_at_most(self, bucket: int) -> None:
        """Make sure the releaser's cursor is at or below `bucket`.

        The cursor is one row per scope, so a lightweight transaction on it for every
        hold would serialize a burst of holds (Paxos contention). It is needed only when
        the cursor is unset or ahead of `bucket`, and a floor once ensured stays valid:
        the releaser never moves the cursor past the current minute, and holds are for
        the current minute or later. So: remember the floor, check the row only when a
        hold goes below it, and serialize those checks within this process.
        """
        if self._floor is not None and bucket >= self._floor:
            return
        async with self._cursor_lock:
            if self._floor is not None and bucket >= self._floor:
                return
            rows = await aexecute(self._s, self._get_cursor, (self.scope,))
            current = int(rows[0]["bucket"]) if rows else None
            if current is None:
                init = await aexecute(self._s, self._init_cursor, (self.scope, bucket))
                if not init[0]["[applied]"]:
                    current = int(init[0]["bucket"])
            if current is not None and current > bucket:
                await aexecute(self._s, self._lower_cursor, (bucket, self.scope, bucket))
            self._floor = bucket if current is None or current > bucket else current

    async def acancel(self, event_id: str) -> bool:
        """Cancel a held request; False when unknown, already released or canceled."""
        rows = await aexecute(
            self._s, self._transition, (CANCELED, datetime.now(UTC), event_id, HELD)
        )
        return bool(rows[0]["[applied]"])

    def cancel(self, event_id: str) -> bool:
        """Blocking form of `acancel`, for callers without an event loop."""
        row = self._s.execute(self._transition, (CANCELED, datetime.now(UTC), event_id, HELD)).one()
        return bool(row["[applied]"])

    async def state(self, event_id: str) -> str | None:
        rows = await aexecute(self._s, self._get_state, (event_id,))
        return rows[0]["state"] if rows else None

    async def _claim(self, h: Held) -> bool:
        """True when this releaser should publish `h` (held → releasing, or a retry)."""
        rows = await aexecute(self._s, self._get_state, (h.event_id,))
        if not rows:
            return False
        state, due = rows[0]["state"], rows[0]["due_at"]
        if due is not None and _ms(due) != h.due_at_ms:
            return False  # held again for another time: this row is stale
        if state == RELEASING:
            return True
        if state != HELD:
            return False
        res = await aexecute(
            self._s, self._transition, (RELEASING, datetime.now(UTC), h.event_id, HELD)
        )
        return bool(res[0]["[applied]"]) or res[0].get("state") == RELEASING

    async def _release_one(self, bucket: int, h: Held, publish: Publish) -> int:
        released = 0
        if await self._claim(h):
            await publish(
                h.user_id,
                h.payload,
                [(Header.RELEASED, b"1"), (Header.SCHEDULE_REASON, (h.reason or "").encode())],
            )
            await aexecute(
                self._s, self._transition, (RELEASED, datetime.now(UTC), h.event_id, RELEASING)
            )
            released = 1
        await aexecute(
            self._s, self._delete_row, (self.scope, bucket, _ts(h.due_at_ms), h.event_id)
        )
        return released

    async def _release_bucket(self, bucket: int, now_ms: int, publish: Publish) -> tuple[int, bool]:
        """(released, bucket empty for good). Users run concurrently, each user's held
        requests in due order, so a campaign due at 9:00 goes out in seconds."""
        rows = await aexecute(self._s, self._due_rows, (self.scope, bucket, _ts(now_ms)))
        by_user: dict[str, list[Held]] = {}
        for r in rows:
            h = Held(r["event_id"], r["user_id"], _ms(r["due_at"]), r["reason"], r["payload"])
            by_user.setdefault(h.user_id, []).append(h)
        slots = asyncio.Semaphore(_CONCURRENCY)

        async def user_in_order(held: list[Held]) -> int:
            async with slots:
                return sum([await self._release_one(bucket, h, publish) for h in held])

        counts = await asyncio.gather(*(user_in_order(hs) for hs in by_user.values()))
        return sum(counts), bucket < bucket_of(now_ms)

    async def release_due(self, publish: Publish, now_ms: int | None = None) -> int:
        """Publish every held request due by `now_ms`; returns how many were released."""
        now_ms = now_ms if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
        now_bucket = bucket_of(now_ms)
        rows = await aexecute(self._s, self._get_cursor, (self.scope,))
        if not rows:
            return 0  # nothing was ever held in this scope
        start = int(rows[0]["bucket"])
        end = min(now_bucket, start + _MAX_BUCKETS_PER_PASS)
        total = 0
        new_cursor = start
        advancing = True
        for bucket in range(start, end + 1):
            released, empty = await self._release_bucket(bucket, now_ms, publish)
            total += released
            if advancing and empty and bucket <= now_bucket - _SKEW_MINUTES:
                new_cursor = bucket + 1
            else:
                advancing = False
        if new_cursor != start:
            await aexecute(self._s, self._advance_cursor, (new_cursor, self.scope, start))
        return total


async def run_releaser(
    store: ScheduleStore,
    publish: Publish,
    *,
    interval_s: float,
    active: Callable[[], bool] = lambda: True,
) -> None:
    """Release due requests every `interval_s` while `active()` says this process leads."""
    while True:
        if active():
            try:
                await store.release_due(publish)
            except Exception as exc:  # Cassandra or Kafka hiccup: the next pass retries
                log.warning("release pass failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(interval_s)
