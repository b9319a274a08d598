"""The send API's idempotency keys, scoped per client (`herald.idempotency_keys`).

A key is bound to the body first sent with it, for 7 days (the processor's event-id dedup
window): the same body again is a replay (same ids, published again, dropped by the
processor), another body is refused, as Stripe does. The binding is a lightweight
transaction, so of two racing requests with different bodies exactly one is accepted.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from cassandra.cluster import Session

from infra.cassandra import aexecute


class Claim(Enum):
    NEW = "new"
    REPLAY = "replay"
    CONFLICT = "conflict"


def fingerprint(body: Any) -> str:
    """SHA-256 of the body as canonical JSON: key order and whitespace do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyKeys:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._claim = session.prepare(
            "INSERT INTO idempotency_keys (client_id, idempotency_key, fingerprint, created_at)"
            " VALUES (?, ?, ?, ?) IF NOT EXISTS"
        )

    async def claim(self, client_id: str, key: str, body_fingerprint: str) -> Claim:
        rows = await aexecute(
            self.session, self._claim, (client_id, key, body_fingerprint, datetime.now(UTC))
        )
        if rows[0]["[applied]"]:
            return Claim.NEW
        return Claim.REPLAY if rows[0]["fingerprint"] == body_fingerprint else Claim.CONFLICT
