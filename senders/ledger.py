"""The delivery ledger (`herald.delivery_ledger_by_minute`) and what the senders write beside it.

Every state change of a delivery is conditioned on the state (and owner) the writer
expects, so two senders holding the same Kafka record (rebalance, replay, retry race) can
never both call a provider: exactly one claim wins.

Nothing here costs a round trip per delivery. Conditional writes wait in a queue per
ledger partition and go out as one conditional batch on that partition (Paxos v2: one
transaction for the lot), one batch in flight per partition and process; what queued up
meanwhile goes in the next one. A batch applies all or nothing, so when it is refused
(another sender holds some of the rows) the rows are read once, the writes whose
condition no longer holds are answered `False`, and the rest go again. Plain writes
(the notification log) share unlogged batches.

Whether an outcome's records were published is read from the notification log, whose row
for a delivery is written only once they are acknowledged: the ledger row itself is never
written for it, and the log is read only when a copy of a finished delivery comes back (a
replay, a redelivery after a crash).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cassandra import ConsistencyLevel
from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from infra import cql_bind
from infra.cassandra import aexecute
from schemas.contract import FINAL_STATES, LedgerState, Reason
from senders import metrics

log = logging.getLogger(__name__)

MINUTE_MS = 60 * 1000
TABLE = "delivery_ledger_by_minute"
UNCERTAIN_AFTER_CRASH = Reason.UNCERTAIN_AFTER_CRASH
# Rows per conditional batch and statements per unlogged batch: a ledger row is ~300 bytes,
# so a batch stays well under Cassandra's default `batch_size_fail_threshold` (50 KiB).
MAX_CONDITIONAL = 100
# A conditional batch this full goes at once, lingering or not: from about 16-32 rows on,
# a round's fixed cost is a small part of Cassandra's CPU per row.
LINGER_FILL = 32
MAX_PLAIN = 60
_ROWS = {k: metrics.LEDGER_BATCH_ROWS.labels(k) for k in ("conditional", "plain")}
_TOOK = {k: metrics.LEDGER_BATCH_SECONDS.labels(k) for k in ("conditional", "plain")}

State = LedgerState
FINAL = FINAL_STATES  # a delivery in one of these states is never sent again


@dataclass(frozen=True)
class Ref:
    """Where a delivery's row lives: every copy of a delivery has the same `Ref`."""

    delivery_id: str
    slot: int  # Kafka partition index of the record
    minute: int  # requested_at, minutes since the epoch

    @classmethod
    def of(cls, delivery: dict[str, Any], partition: int) -> Ref:
        requested = delivery["requested_at"]
        ms = requested if isinstance(requested, int) else int(requested.timestamp() * 1000)
        return cls(delivery["delivery_id"], partition, ms // MINUTE_MS)

    @property
    def partition(self) -> tuple[int, int]:
        return (self.slot, self.minute)


@dataclass(frozen=True)
class LedgerRow:
    state: str
    attempt: int
    owner: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    reason: str | None = None
    first_error: str | None = None
    last_error: str | None = None
    pinned_provider: str | None = None
    published: bool = False
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LedgerRow:
        updated = row.get("updated_at")
        if updated is not None and updated.tzinfo is None:
            updated = updated.replace(tzinfo=UTC)  # the driver returns naive UTC
        return cls(
            state=row["state"],
            attempt=row.get("attempt") or 0,
            owner=row.get("owner"),
            provider=row.get("provider"),
            provider_message_id=row.get("provider_message_id"),
            reason=row.get("reason"),
            first_error=row.get("first_error"),
            last_error=row.get("last_error"),
            pinned_provider=row.get("pinned_provider"),
            published=bool(row.get("published")),
            updated_at=updated,
        )


@dataclass(frozen=True)
class LedgerOutcome:
    """The fields a transition out of `sending` writes."""

    state: State
    reason: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    first_error: str | None = None
    last_error: str | None = None
    pinned_provider: str | None = None


Condition = Callable[[LedgerRow | None], bool]

# The condition of each transition, on the row as it is now (None: no row). The CQL below
# states the same in its IF clauses; a refused batch is sorted out with these, and the
# unit tests' in-memory ledger applies them as they are.


def absent() -> Condition:
    return lambda row: row is None


def is_state(state: str, attempt: int) -> Condition:
    return lambda row: row is not None and row.state == state and row.attempt == attempt


def held_by(owner: str) -> Condition:
    return lambda row: row is not None and row.state == State.SENDING and row.owner == owner


def held_as(expect: LedgerRow) -> Condition:
    return lambda row: (
        row is not None
        and row.state == State.SENDING
        and row.owner == expect.owner
        and row.attempt == expect.attempt
    )


def uncertain() -> Condition:
    return lambda row: (
        row is not None and row.state == State.DEAD_LETTERED and row.reason == UNCERTAIN_AFTER_CRASH
    )


class Ledger(Protocol):
    async def claim(
        self, ref: Ref, notification_id: str, attempt: int, owner: str, provider: str
    ) -> LedgerRow | None:
        """Create the row in `sending`. None when claimed; else the row that exists."""

    async def reclaim(
        self,
        ref: Ref,
        notification_id: str,
        attempt: int,
        owner: str,
        provider: str,
        expect: LedgerRow,
    ) -> bool:
        """Move an existing row back to `sending` for `attempt`, if it is still `expect`."""

    async def set_provider(self, ref: Ref, owner: str, provider: str) -> bool:
        """Record the provider about to be called (failover), if `owner` still holds it."""

    async def finish(self, ref: Ref, owner: str, outcome: LedgerOutcome) -> bool:
        """Leave `sending` held by `owner`; False if the claim was lost meanwhile."""

    async def resolve_stale(
        self, ref: Ref, owner: str, expect: LedgerRow, outcome: LedgerOutcome
    ) -> bool:
        """Take over the `sending` claim `expect` of a dead owner straight into `outcome`."""

    async def correct_uncertain(self, ref: Ref, owner: str, outcome: LedgerOutcome) -> bool:
        """Replace an `uncertain_after_crash` verdict by what the owner knows happened."""

    async def published(self, ref: Ref, delivery: dict[str, Any], row: LedgerRow) -> None:
        """The outcome's records are acknowledged by Kafka: show the outcome in the
        delivery's notification log row (which is what marks it published)."""

    async def read(self, ref: Ref) -> LedgerRow | None: ...

    async def delete_device(self, user_id: str, device_id: str, token: str) -> bool:
        """Remove a device whose token the provider rejected; only if the token is unchanged."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Write:
    ref: Ref
    stmt: PreparedStatement
    params: tuple[Any, ...]
    condition: Condition
    due: float  # event-loop time by which its batch must go
    done: asyncio.Future[LedgerRow | bool | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _settle(fut: asyncio.Future[Any], result: object) -> None:
    """Answer a waiter, unless it gave up (cancelled at shutdown)."""
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


class ConditionalBatches:
    """Conditional writes grouped per ledger partition: one batch in flight per partition.

    A Paxos round costs Cassandra about as much as ten of the rows it carries, so a write
    may `linger`: its batch waits, up to that long, for others to join it, unless it holds
    `LINGER_FILL` rows already or a write that may not wait arrives (a claim, before its
    provider call, while a finish after one may wait)."""

    def __init__(self, session: Session, read: PreparedStatement) -> None:
        self._session = session
        self._read = read
        self._queued: dict[tuple[int, int], list[_Write]] = {}
        # Per partition whose drain is lingering: until when, and a future resolved when a
        # write due sooner arrives (or the batch fills).
        self._wake: dict[tuple[int, int], tuple[float, asyncio.Future[None]]] = {}
        self._drains: set[asyncio.Task[None]] = set()  # referenced until done

    async def write(
        self,
        ref: Ref,
        stmt: PreparedStatement,
        params: tuple[Any, ...],
        condition: Condition,
        *,
        linger: float = 0.0,
    ) -> LedgerRow | bool | None:
        """True once applied; else the row as it is (None: no row) that fails `condition`."""
        loop = asyncio.get_running_loop()
        w = _Write(ref, stmt, params, condition, loop.time() + linger)
        key = ref.partition
        queued = self._queued.get(key)
        if queued is None:
            self._queued[key] = [w]
            task = asyncio.create_task(self._drain(key))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        else:
            queued.append(w)
            lingering = self._wake.get(key)
            if lingering is not None:
                until, wake = lingering
                if not wake.done() and (w.due < until or len(queued) >= LINGER_FILL):
                    wake.set_result(None)
        return await w.done

    async def _drain(self, key: tuple[int, int]) -> None:
        await asyncio.sleep(0)  # the writes of records dispatched together go together
        loop = asyncio.get_running_loop()
        while queued := self._queued.get(key):
            if len(queued) < LINGER_FILL:
                until = min(w.due for w in queued)
                wait = until - loop.time()
                if wait > 0:
                    wake: asyncio.Future[None] = loop.create_future()
                    self._wake[key] = (until, wake)
                    await asyncio.wait((wake,), timeout=wait)
                    del self._wake[key]
                    continue  # writes queued meanwhile joined the list: judge it again
            # One write per row and batch: two conditions on one row would both be judged
            # against the row before the batch.
            batch: list[_Write] = []
            later: list[_Write] = []
            ids: set[str] = set()
            for w in queued:
                if len(batch) < MAX_CONDITIONAL and w.ref.delivery_id not in ids:
                    ids.add(w.ref.delivery_id)
                    batch.append(w)
                else:
                    later.append(w)
            self._queued[key] = later
            try:
                await self._apply(key, batch)
            except Exception as exc:  # a timeout may or may not have applied: callers check
                for w in batch:
                    _settle(w.done, exc)
            if not self._queued.get(key):
                del self._queued[key]

    async def _apply(self, key: tuple[int, int], writes: list[_Write]) -> None:
        rows, took = _ROWS["conditional"], _TOOK["conditional"]
        while writes:
            rows.observe(len(writes))
            started = time.perf_counter()
            if len(writes) == 1:
                query: Any = writes[0].stmt.bind(writes[0].params)
            else:
                query = BatchStatement(batch_type=BatchType.UNLOGGED)
                for w in writes:
                    cql_bind.add(query, w.stmt, w.params)
            result = await aexecute(self._session, query)
            took.observe(time.perf_counter() - started)
            if result[0]["[applied]"]:
                for w in writes:
                    _settle(w.done, True)
                return
            metrics.LEDGER_BATCH_REFUSED.inc()
            # Refused: somebody else holds some of these rows. Those whose condition still
            # holds go again; the others are answered with the row that refused them.
            found = await aexecute(
                self._session, self._read, (*key, [w.ref.delivery_id for w in writes])
            )
            now = {r["delivery_id"]: LedgerRow.from_row(r) for r in found}
            again = []
            for w in writes:
                row = now.get(w.ref.delivery_id)
                if w.condition(row):
                    again.append(w)
                else:
                    _settle(w.done, row)
            writes = again


_Plain = tuple[PreparedStatement, tuple[Any, ...]]


class PlainBatches:
    """Unconditional writes, queued and sent as unlogged batches (one flush in flight).
    The statements of one `write` share a batch and one future."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._queued: list[tuple[tuple[_Plain, ...], asyncio.Future[None]]] = []
        self._drain_task: asyncio.Task[None] | None = None  # referenced until done

    async def write(self, *statements: _Plain) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((statements, fut))
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)
            while self._queued:
                queued, self._queued = self._queued, []
                chunks: list[list[tuple[tuple[_Plain, ...], asyncio.Future[None]]]] = [[]]
                size = 0
                for entry in queued:
                    if size and size + len(entry[0]) > MAX_PLAIN:
                        chunks.append([])
                        size = 0
                    chunks[-1].append(entry)
                    size += len(entry[0])
                await asyncio.gather(*(self._flush(c) for c in chunks))
        finally:
            self._drain_task = None

    async def _flush(self, chunk: list[tuple[tuple[_Plain, ...], asyncio.Future[None]]]) -> None:
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for statements, _ in chunk:
            for stmt, params in statements:
                cql_bind.add(batch, stmt, params)
        _ROWS["plain"].observe(len(batch))
        started = time.perf_counter()
        try:
            await aexecute(self._session, batch)
            _TOOK["plain"].observe(time.perf_counter() - started)
        except Exception as exc:
            for _, fut in chunk:
                _settle(fut, exc)
        else:
            for _, fut in chunk:
                _settle(fut, None)


_FIELDS = (
    "state, reason, provider, provider_message_id, first_error, last_error, pinned_provider,"
    " owner, published, updated_at"
)


class CassandraLedger:
    def __init__(
        self, session: Session, *, linger_s: float = 0.0, claim_linger_s: float = 0.0
    ) -> None:
        """How long a conditional write may wait for others to share its Paxos round: a
        claim, which delays its provider call, `claim_linger_s`; a write after the call
        (a finish), `linger_s`."""
        self._session = session
        ks = session.keyspace or "herald"
        prep = session.prepare
        where = "WHERE slot = ? AND minute = ? AND delivery_id = ?"
        self._claim = prep(
            f"INSERT INTO {ks}.{TABLE} (slot, minute, delivery_id, notification_id, state,"
            " attempt, owner, provider, updated_at)"
            " VALUES (?, ?, ?, ?, 'sending', ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._reclaim = prep(
            f"UPDATE {ks}.{TABLE} SET state = 'sending', attempt = ?, owner = ?,"
            f" provider = ?, updated_at = ? {where}"
            " IF state = ? AND attempt = ?"
        )
        self._set_provider = prep(
            f"UPDATE {ks}.{TABLE} SET provider = ?, updated_at = ? {where}"
            " IF state = 'sending' AND owner = ?"
        )
        finish_set = (
            f"UPDATE {ks}.{TABLE} SET state = ?, reason = ?, provider = ?,"
            " provider_message_id = ?, first_error = ?, last_error = ?, pinned_provider = ?,"
            f" owner = ?, updated_at = ? {where}"
        )
        self._finish = prep(finish_set + " IF state = 'sending' AND owner = ?")
        self._resolve = prep(finish_set + " IF state = 'sending' AND owner = ? AND attempt = ?")
        self._correct = prep(
            finish_set + f" IF state = 'dead_lettered' AND reason = '{UNCERTAIN_AFTER_CRASH}'"
        )
        self._read = prep(f"SELECT * FROM {ks}.{TABLE} {where}")
        self._read.consistency_level = ConsistencyLevel.SERIAL  # see in-progress LWTs
        self._read_many = prep(
            f"SELECT * FROM {ks}.{TABLE} WHERE slot = ? AND minute = ? AND delivery_id IN ?"
        )
        self._read_many.consistency_level = ConsistencyLevel.SERIAL
        # The notification log is the view by delivery (013_log_is_the_view.cql): its row
        # is written once the outcome's records are acknowledged, which marks it published.
        self._log = prep(
            f"INSERT INTO {ks}.notification_log (notification_id, delivery_id, user_id, channel,"
            f" category, attempt, {_FIELDS}) VALUES ({', '.join('?' * 16)})"
        )
        self._unpublish = prep(
            f"UPDATE {ks}.notification_log SET published = false"
            " WHERE notification_id = ? AND delivery_id = ?"
        )
        self._log_state = prep(
            f"SELECT attempt, state, published FROM {ks}.notification_log"
            " WHERE notification_id = ? AND delivery_id = ?"
        )
        self._delete_device = prep(
            f"DELETE FROM {ks}.devices_by_user WHERE user_id = ? AND device_id = ?"
            " IF device_token = ?"
        )
        self._conditional = ConditionalBatches(session, self._read_many)
        self._linger = linger_s
        self._claim_linger = claim_linger_s
        self._plain = PlainBatches(session)

    @staticmethod
    def _key(ref: Ref) -> tuple[int, int, str]:
        return (ref.slot, ref.minute, ref.delivery_id)

    async def _write(
        self,
        ref: Ref,
        stmt: PreparedStatement,
        params: tuple[Any, ...],
        condition: Condition,
        *,
        linger: float = 0.0,
    ) -> bool:
        result = await self._conditional.write(ref, stmt, params, condition, linger=linger)
        return result is True

    async def claim(
        self, ref: Ref, notification_id: str, attempt: int, owner: str, provider: str
    ) -> LedgerRow | None:
        params = (*self._key(ref), notification_id, attempt, owner, provider, _now())
        result = await self._conditional.write(
            ref, self._claim, params, absent(), linger=self._claim_linger
        )
        if result is True:
            return None
        assert isinstance(result, LedgerRow)  # `absent` fails only on a row
        return await self._with_published(ref, notification_id, result)

    async def reclaim(
        self,
        ref: Ref,
        notification_id: str,
        attempt: int,
        owner: str,
        provider: str,
        expect: LedgerRow,
    ) -> bool:
        if expect.state == State.DEAD_LETTERED:
            # A redrive sends the same attempt again and may end as it ended before (the
            # same state), which the log could not tell from the outcome it shows: clear
            # its mark first. Crashing right after leaves at most one more publish.
            await aexecute(self._session, self._unpublish, (notification_id, ref.delivery_id))
        params = (attempt, owner, provider, _now(), *self._key(ref), expect.state, expect.attempt)
        return await self._write(
            ref,
            self._reclaim,
            params,
            is_state(expect.state, expect.attempt),
            linger=self._claim_linger,
        )

    async def set_provider(self, ref: Ref, owner: str, provider: str) -> bool:
        params = (provider, _now(), *self._key(ref), owner)
        return await self._write(ref, self._set_provider, params, held_by(owner))

    def _finish_params(self, ref: Ref, owner: str, o: LedgerOutcome) -> tuple[Any, ...]:
        return (
            o.state.value,
            o.reason,
            o.provider,
            o.provider_message_id,
            o.first_error,
            o.last_error,
            o.pinned_provider,
            owner,
            _now(),
            *self._key(ref),
        )

    async def finish(self, ref: Ref, owner: str, outcome: LedgerOutcome) -> bool:
        params = (*self._finish_params(ref, owner, outcome), owner)
        return await self._write(ref, self._finish, params, held_by(owner), linger=self._linger)

    async def resolve_stale(
        self, ref: Ref, owner: str, expect: LedgerRow, outcome: LedgerOutcome
    ) -> bool:
        params = (*self._finish_params(ref, owner, outcome), expect.owner, expect.attempt)
        return await self._write(ref, self._resolve, params, held_as(expect), linger=self._linger)

    async def correct_uncertain(self, ref: Ref, owner: str, outcome: LedgerOutcome) -> bool:
        params = self._finish_params(ref, owner, outcome)
        return await self._write(ref, self._correct, params, uncertain(), linger=self._linger)

    async def _with_published(
        self, ref: Ref, notification_id: str | None, row: LedgerRow
    ) -> LedgerRow:
        """`row` with `published` from the notification log: its records went out if the
        log shows this very outcome (attempt and state). A log row missing or older (a
        write not yet seen, a crash before it) reads as unpublished: one more idempotent
        publish."""
        if row.state == State.SENDING or notification_id is None:
            return dataclasses.replace(row, published=False)
        found = await aexecute(self._session, self._log_state, (notification_id, ref.delivery_id))
        shown = found[0] if found else None
        published = (
            shown is not None
            and bool(shown["published"])
            and shown["attempt"] == row.attempt
            and shown["state"] == row.state
        )
        return dataclasses.replace(row, published=published)

    async def published(self, ref: Ref, delivery: dict[str, Any], row: LedgerRow) -> None:
        # A plain write, not conditional: the log follows our own transition from the same
        # client; at worst a lost write means one more idempotent re-publish.
        params = (
            delivery["notification_id"],
            ref.delivery_id,
            delivery["user_id"],
            delivery["channel"],
            delivery["category"],
            row.attempt,
            row.state,
            row.reason,
            row.provider,
            row.provider_message_id,
            row.first_error,
            row.last_error,
            row.pinned_provider,
            row.owner,
            True,  # published
            _now(),
        )
        await self._plain.write((self._log, params))

    async def read(self, ref: Ref) -> LedgerRow | None:
        rows = await aexecute(self._session, self._read, self._key(ref))
        if not rows:
            return None
        row = LedgerRow.from_row(rows[0])
        return await self._with_published(ref, rows[0]["notification_id"], row)

    async def delete_device(self, user_id: str, device_id: str, token: str) -> bool:
        rows = await aexecute(self._session, self._delete_device, (user_id, device_id, token))
        return bool(rows[0]["[applied]"])
