"""The delivery ledger (`herald.deliveries`) and the notification log, in Cassandra.

Every state change of a delivery is a lightweight transaction conditioned on the state
(and owner) the writer expects, so two senders holding the same Kafka record (rebalance,
replay, retry race) can never both call a provider: exactly one claim wins.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cassandra import ConsistencyLevel
from cassandra.cluster import Session
from cassandra.query import PreparedStatement

from infra.cassandra import aexecute


class State(enum.StrEnum):
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    DROPPED = "dropped"


# A delivery in one of these states is never sent again.
FINAL = frozenset({State.SENT, State.FAILED, State.DEAD_LETTERED, State.DROPPED})


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
class Outcome:
    """The fields a transition out of `sending` writes."""

    state: State
    reason: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    first_error: str | None = None
    last_error: str | None = None
    pinned_provider: str | None = None


class Ledger(Protocol):
    async def claim(
        self, delivery_id: str, notification_id: str, attempt: int, owner: str, provider: str
    ) -> LedgerRow | None:
        """Create the row in `sending`. None when claimed; else the row that exists."""

    async def reclaim(
        self, delivery_id: str, attempt: int, owner: str, provider: str, expect: LedgerRow
    ) -> bool:
        """Move an existing row back to `sending` for `attempt`, if it is still `expect`."""

    async def set_provider(self, delivery_id: str, owner: str, provider: str) -> bool:
        """Record the provider about to be called (failover), if `owner` still holds it."""

    async def finish(self, delivery_id: str, owner: str, outcome: Outcome) -> bool:
        """Leave `sending` held by `owner`; False if the claim was lost meanwhile."""

    async def resolve_stale(
        self, delivery_id: str, owner: str, expect: LedgerRow, outcome: Outcome
    ) -> bool:
        """Take over the `sending` claim `expect` of a dead owner straight into `outcome`."""

    async def correct_uncertain(self, delivery_id: str, owner: str, outcome: Outcome) -> bool:
        """Replace an `uncertain_after_crash` verdict by what the owner knows happened."""

    async def mark_published(self, delivery_id: str) -> None:
        """The outcome's records are acknowledged by Kafka."""

    async def read(self, delivery_id: str) -> LedgerRow | None: ...

    async def log(self, delivery: dict[str, Any], row: LedgerRow) -> None:
        """Upsert the delivery's line in the notification log."""

    async def delete_device(self, user_id: str, device_id: str, token: str) -> bool:
        """Remove a device whose token the provider rejected; only if the token is unchanged."""


def _now() -> datetime:
    return datetime.now(UTC)


class CassandraLedger:
    def __init__(self, session: Session) -> None:
        self._session = session
        ks = session.keyspace or "herald"
        prep = session.prepare
        self._claim = prep(
            f"INSERT INTO {ks}.deliveries (delivery_id, notification_id, state, attempt, owner,"
            " provider, published, updated_at) VALUES (?, ?, 'sending', ?, ?, ?, false, ?)"
            " IF NOT EXISTS"
        )
        self._reclaim = prep(
            f"UPDATE {ks}.deliveries SET state = 'sending', attempt = ?, owner = ?, provider = ?,"
            " published = false, updated_at = ? WHERE delivery_id = ?"
            " IF state = ? AND attempt = ?"
        )
        self._set_provider = prep(
            f"UPDATE {ks}.deliveries SET provider = ?, updated_at = ? WHERE delivery_id = ?"
            " IF state = 'sending' AND owner = ?"
        )
        finish_set = (
            f"UPDATE {ks}.deliveries SET state = ?, reason = ?, provider = ?,"
            " provider_message_id = ?, first_error = ?, last_error = ?, pinned_provider = ?,"
            " owner = ?, published = false, updated_at = ? WHERE delivery_id = ?"
        )
        self._finish = prep(finish_set + " IF state = 'sending' AND owner = ?")
        self._resolve = prep(finish_set + " IF state = 'sending' AND owner = ? AND attempt = ?")
        self._correct = prep(
            finish_set + " IF state = 'dead_lettered' AND reason = 'uncertain_after_crash'"
        )
        self._published = prep(f"UPDATE {ks}.deliveries SET published = true WHERE delivery_id = ?")
        self._read = prep(f"SELECT * FROM {ks}.deliveries WHERE delivery_id = ?")
        self._read.consistency_level = ConsistencyLevel.SERIAL  # see in-progress LWTs
        self._log = prep(
            f"INSERT INTO {ks}.notification_log (notification_id, delivery_id, user_id, channel,"
            " category, state, reason, attempt, provider, provider_message_id, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._delete_device = prep(
            f"DELETE FROM {ks}.devices_by_user WHERE user_id = ? AND device_id = ?"
            " IF device_token = ?"
        )

    async def _lwt(self, stmt: PreparedStatement, params: tuple[Any, ...]) -> dict[str, Any]:
        rows = await aexecute(self._session, stmt, params)
        return rows[0]

    async def claim(
        self, delivery_id: str, notification_id: str, attempt: int, owner: str, provider: str
    ) -> LedgerRow | None:
        row = await self._lwt(
            self._claim, (delivery_id, notification_id, attempt, owner, provider, _now())
        )
        return None if row["[applied]"] else LedgerRow.from_row(row)

    async def reclaim(
        self, delivery_id: str, attempt: int, owner: str, provider: str, expect: LedgerRow
    ) -> bool:
        row = await self._lwt(
            self._reclaim,
            (attempt, owner, provider, _now(), delivery_id, expect.state, expect.attempt),
        )
        return bool(row["[applied]"])

    async def set_provider(self, delivery_id: str, owner: str, provider: str) -> bool:
        row = await self._lwt(self._set_provider, (provider, _now(), delivery_id, owner))
        return bool(row["[applied]"])

    def _finish_params(self, delivery_id: str, owner: str, o: Outcome) -> tuple[Any, ...]:
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
            delivery_id,
        )

    async def finish(self, delivery_id: str, owner: str, outcome: Outcome) -> bool:
        row = await self._lwt(
            self._finish, (*self._finish_params(delivery_id, owner, outcome), owner)
        )
        return bool(row["[applied]"])

    async def resolve_stale(
        self, delivery_id: str, owner: str, expect: LedgerRow, outcome: Outcome
    ) -> bool:
        params = self._finish_params(delivery_id, owner, outcome)
        row = await self._lwt(self._resolve, (*params, expect.owner, expect.attempt))
        return bool(row["[applied]"])

    async def correct_uncertain(self, delivery_id: str, owner: str, outcome: Outcome) -> bool:
        row = await self._lwt(self._correct, self._finish_params(delivery_id, owner, outcome))
        return bool(row["[applied]"])

    async def mark_published(self, delivery_id: str) -> None:
        # A plain write, not an LWT: LWTs are the ledger's bottleneck (Paxos round trips).
        # It touches only `published`, follows our own transition from the same client, and
        # any later transition (an LWT) sets it back to false, so ordering is not at risk;
        # at worst a lost flag means one more idempotent re-publish.
        await aexecute(self._session, self._published, (delivery_id,))

    async def read(self, delivery_id: str) -> LedgerRow | None:
        rows = await aexecute(self._session, self._read, (delivery_id,))
        return LedgerRow.from_row(rows[0]) if rows else None

    async def log(self, delivery: dict[str, Any], row: LedgerRow) -> None:
        await aexecute(
            self._session,
            self._log,
            (
                delivery["notification_id"],
                delivery["delivery_id"],
                delivery["user_id"],
                delivery["channel"],
                delivery["category"],
                row.state,
                row.reason,
                row.attempt,
                row.provider,
                row.provider_message_id,
                _now(),
            ),
        )

    async def delete_device(self, user_id: str, device_id: str, token: str) -> bool:
        row = await self._lwt(self._delete_device, (user_id, device_id, token))
        return bool(row["[applied]"])
