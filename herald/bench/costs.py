"""CPU µs per delivery per component: CPU seconds of each process tree ÷ deliveries.

The components are the bench's process names grouped: `processor-1`, `processor-2` →
processor, `senders-…` → senders; `herald` is processor + senders. The budget (issue 15)
is printed beside the figures, never asserted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

COMPONENTS = ("processor", "senders", "herald", "kafka", "cassandra", "emulators")
HERALD = ("processor", "senders")
BUDGET_US: dict[str, float] = {"herald": 300.0, "cassandra": 100.0, "emulators": 50.0}


def component_of(process: str) -> str:
    """`senders-2` → `senders`; names without an index are components themselves."""
    head, _, index = process.rpartition("-")
    return head if head and index.isdigit() else process


def cpu_us_per_delivery(cpu_seconds: Mapping[str, float], deliveries: int) -> dict[str, float]:
    """Per component (only those measured), CPU µs per delivery; empty without deliveries."""
    if deliveries <= 0:
        return {}
    per: dict[str, float] = {}
    for process, seconds in cpu_seconds.items():
        component = component_of(process)
        per[component] = per.get(component, 0.0) + seconds
    if any(c in per for c in HERALD):
        per["herald"] = sum(per.get(c, 0.0) for c in HERALD)
    return {c: round(per[c] * 1e6 / deliveries, 1) for c in COMPONENTS if c in per}


# The senders' conditional ledger batches (one Paxos round each): a round costs Cassandra
# about as much as ten rows (docs/benchmarks.md), so rounds per delivery explain most of
# its CPU per delivery.
ROUNDS = "herald_ledger_batch_rows"
ROUND_SECONDS = "herald_ledger_batch_seconds"


def ledger_totals(metrics_text: str) -> dict[str, float]:
    """From one sender's Prometheus text: conditional rounds, rows and seconds so far."""
    totals = {"rounds": 0.0, "rows": 0.0, "seconds": 0.0}
    wanted = {
        f"{ROUNDS}_count": "rounds",
        f"{ROUNDS}_sum": "rows",
        f"{ROUND_SECONDS}_sum": "seconds",
    }
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            key = wanted.get(sample.name)
            if key is not None and sample.labels.get("kind") == "conditional":
                totals[key] += sample.value
    return totals


def ledger_rounds(
    before: Mapping[str, float], after: Mapping[str, float], deliveries: int
) -> dict[str, float]:
    """Rounds per delivery, rows per round and ms per round between two readings (summed
    over the senders); empty when no round was made."""
    rounds = after["rounds"] - before["rounds"]
    if rounds <= 0 or deliveries <= 0:
        return {}
    return {
        "rounds_per_delivery": round(rounds / deliveries, 3),
        "rows_per_round": round((after["rows"] - before["rows"]) / rounds, 1),
        "ms_per_round": round(1000 * (after["seconds"] - before["seconds"]) / rounds, 1),
    }


def compacted_mb(
    history: Iterable[Mapping[str, Any]], keyspace: str, since: datetime, until: datetime
) -> float:
    """MB Cassandra's compactions of `keyspace` read (`bytes_in`) that ended within
    [since, until], from rows of `system.compaction_history` (naive UTC `compacted_at`, as
    the driver returns it). A compaction takes most of a core for seconds on the dev VM:
    a phase it lands in shows Cassandra dearer per delivery than its neighbours."""
    start, end = _naive_utc(since), _naive_utc(until)
    total = sum(
        int(r["bytes_in"] or 0)
        for r in history
        if r["keyspace_name"] == keyspace and start <= _naive_utc(r["compacted_at"]) <= end
    )
    return round(total / 1e6, 1)


def _naive_utc(at: datetime) -> datetime:
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)
