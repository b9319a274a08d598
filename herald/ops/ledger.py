"""Read access to what the senders recorded of each delivery (`herald.notification_log`,
one row per delivery once its outcome is published): what replay and redrive consult
before they re-produce a record. The judge of "already sent" stays the sender's claim.

Senders claim a delivery (state `sending`) before calling the provider and confirm the
outcome after. Replay and redrive only read it: they never send; they re-produce to a
channel topic, where the sender's own claim is the last guard against a double send.
"""

from __future__ import annotations

from collections.abc import Iterable

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args

from schemas.contract import FINAL_STATES, LedgerState

# A replay must not re-produce these: the delivery reached an end, is being sent now, or
# waits in a retry tier (which will send it).
REPLAY_FINAL = FINAL_STATES | {LedgerState.SENDING, LedgerState.RETRYING}
# A redrive exists to retry dead letters, so only a send or a permanent verdict stops it.
REDRIVE_FINAL = REPLAY_FINAL - {LedgerState.DEAD_LETTERED}
_REASONS: dict[str, str] = {LedgerState.SENDING: "in_flight", LedgerState.RETRYING: "in_retry"}


def states(session: Session, deliveries: Iterable[tuple[str, str]]) -> dict[str, str]:
    """State of each (notification id, delivery id) whose outcome was published, by
    delivery id; deliveries without one are absent."""
    keys = list(dict.fromkeys(deliveries))
    if not keys:
        return {}
    stmt = session.prepare(
        f"SELECT delivery_id, state FROM {session.keyspace}.notification_log"
        " WHERE notification_id = ? AND delivery_id = ?"
    )
    out: dict[str, str] = {}
    results = execute_concurrent_with_args(
        session, stmt, keys, concurrency=64, raise_on_first_error=True
    )
    for ok, rows in results:
        if ok:
            for row in rows:
                if row.get("state"):
                    out[row["delivery_id"]] = row["state"]
    return out


def skip_reason(state: str | None, final: frozenset[str]) -> str | None:
    """Why a delivery in this ledger state must not be produced again, or None."""
    if state is None or state not in final:
        return None
    return _REASONS.get(state, f"already_{state}")
