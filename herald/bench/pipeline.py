"""One pipeline measurement: herald's real processes, a request stream, and what came out.

A phase publishes requests at an offered rate (0 = as fast as the producer goes, which
builds a backlog and so measures sustained capacity), follows every request through the
status and channel topics until each one is decided and each delivery has ended, then
joins the provider emulator's ledger by delivery id for the publish → receipt latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from herald.bench.kafkautil import ready_producer
from herald.bench.load import publish
from herald.bench.observe import Observer
from infra.settings import KafkaSettings
from schemas import codec
from schemas.channels import Outcome
from schemas.contract import Topics


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class PhaseResult:
    name: str
    processes: int
    offered_rate: float
    requests: int
    publish_seconds: float
    complete: bool
    interrupted: bool
    decided: int
    deliveries_fanned: int
    deliveries_ended: int
    delivered: int  # distinct delivery ids in the emulator ledger
    duplicate_receipts: int  # ledger entries beyond the first per delivery id
    seconds: float  # first publish → last emulator receipt (or last event)
    requests_per_s: float
    deliveries_per_s: float
    processor_per_s: float
    senders_per_s: float
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    # The same latency in two legs, split at the channel record's timestamp (stamped when
    # the processor produced it): publish → fan-out, and fan-out → provider receipt.
    stage_latency_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    # Deliveries/s each channel's senders achieved against its emulator (first to last receipt).
    senders_per_channel: dict[str, float] = field(default_factory=dict)
    # p50 latency of the requests published in the phase's first fifth and in its last
    # (`latency_drift`): a paced phase that kept up has the two close.
    latency_drift_ms: dict[str, float | None] = field(default_factory=dict)


# A paced phase whose p50 latency grew more than this from its first fifth to its last did
# not keep up with the offered rate: its percentiles measure a backlog that grew.
FELL_BEHIND_MS = 250.0


def latency_drift(published_and_latency: list[tuple[int, int]]) -> dict[str, float | None]:
    """p50 latency (ms) of the deliveries of the requests published first (the first fifth,
    by publish time) and last (the last fifth). At a steady offered rate a pipeline that
    keeps up shows both alike; one that falls behind shows the last ones later by the
    backlog it built up."""
    if len(published_and_latency) < 10:
        return {"first": None, "last": None}
    ordered = sorted(published_and_latency)
    k = len(ordered) // 5
    return {
        "first": percentile([lat for _p, lat in ordered[:k]], 50),
        "last": percentile([lat for _p, lat in ordered[-k:]], 50),
    }


def fell_behind(drift: dict[str, float | None]) -> bool | None:
    """Whether a paced phase's backlog grew (None: too few deliveries to say)."""
    first, last = drift.get("first"), drift.get("last")
    if first is None or last is None:
        return None
    return last - first > FELL_BEHIND_MS


def stage_latency(
    receipts: dict[str, int],
    fanned: dict[str, tuple[str, int]],
    created: dict[str, int],
) -> dict[str, dict[str, float | None]]:
    """p50/p95/p99 ms of each leg of a received delivery's way: publish (`created`, per
    notification) → its channel record's timestamp (`fanned`: notification id and ms, per
    delivery), the processor's leg; then → the provider's receipt, the senders' leg."""
    processor = [fanned[d][1] - created[fanned[d][0]] for d in receipts if fanned[d][0] in created]
    senders = [receipts[d] - fanned[d][1] for d in receipts]
    return {
        leg: {f"p{q}": percentile(values, q) for q in (50, 95, 99)}
        for leg, values in (("processor", processor), ("senders", senders))
    }


def fetch_ledger(control_url: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{control_url}/ledger", timeout=120)
    resp.raise_for_status()
    data = resp.json()
    return list(data if isinstance(data, list) else data.get("entries", []))


def _rate(count: int, start_ms: float | None, end_ms: float | None) -> float:
    if not count or start_ms is None or end_ms is None or end_ms <= start_ms:
        return 0.0
    return count / ((end_ms - start_ms) / 1000)


def run_phase(
    *,
    name: str,
    processes: int,
    kafka: KafkaSettings,
    requests: list[dict[str, Any]],
    user_prefix: str,
    rate: float,
    control_url: str | None,
    settle_timeout: float,
    max_wait: float = 0.0,
    topic_prefix: str = "",
    on_progress: Callable[[int, int], None] = lambda _done, _total: None,
    check: Callable[[], None] = lambda: None,
    on_settled: Callable[[], None] = lambda: None,
) -> PhaseResult:
    """Publish `requests`, wait until all are accounted for (or nothing moves for
    `settle_timeout` seconds, or `max_wait` seconds have passed), and measure: an
    incomplete phase reports what got through in its time. `check` raises if a process of
    the run died: figures of a run with a dead stage mean nothing. Without `control_url`
    (the null provider, no emulators) a delivery's receipt is its `sent` event.
    `on_settled` is called once the pipeline's work is over, before the ledger is read."""
    nids = {r["notification_id"] for r in requests}
    observer = Observer(kafka, nids, user_prefix, topic_prefix)
    observer.start()
    created: dict[str, int] = {}
    producer = ready_producer(kafka, "bench-load")

    def published(record: dict[str, Any]) -> None:
        created[record["notification_id"]] = record["created_at"]
        if len(created) % 200 == 0:
            on_progress(len(created) // 2, len(requests))

    t0 = time.perf_counter()
    topic = Topics(topic_prefix).requested
    values = codec.codec_for(kafka.schema_registry_url)
    publish(producer, topic, iter(requests), values=values, rate=rate, on_published=published)
    publish_seconds = time.perf_counter() - t0

    total = len(requests)
    complete = interrupted = False
    give_up = time.monotonic() + max_wait if max_wait else float("inf")
    while True:
        handled, fanned, ended = observer.progress()
        done_share = (handled / total + (ended / fanned if fanned else 0)) / 2
        on_progress(total // 2 + int(done_share * total / 2), total)
        if handled >= total and ended >= fanned:
            complete = True
            break
        if time.monotonic() - observer.state.last_change > settle_timeout:
            break
        if time.monotonic() > give_up:
            break
        try:
            check()
            time.sleep(0.25)
        except KeyboardInterrupt:
            # Ctrl-C: measure what got through so far, flagged incomplete.
            interrupted = True
            break
        except BaseException:
            observer.stop()
            raise
    observer.stop()
    on_settled()
    on_progress(total, total)

    s = observer.state
    decided = observer.progress()[0]
    first_publish = min(created.values())
    ledger: list[dict[str, Any]]
    if control_url is None:
        ledger = [
            {"delivery_id": did, "received_at_ms": end.occurred_at, "channel": "null"}
            for did, end in s.ended.items()
            if end.outcome == Outcome.SENT
            for _ in range(s.sent_events[did] or 1)
        ]
    else:
        ledger = [e for e in fetch_ledger(control_url) if e.get("delivery_id") in s.fanned]
    receipts: dict[str, int] = {}
    duplicates = 0
    for entry in ledger:
        did = entry["delivery_id"]
        if did in receipts:
            duplicates += 1
            receipts[did] = min(receipts[did], int(entry["received_at_ms"]))
        else:
            receipts[did] = int(entry["received_at_ms"])
    by_channel: dict[str, list[int]] = {}
    for entry in ledger:
        by_channel.setdefault(entry.get("channel") or "?", []).append(int(entry["received_at_ms"]))
    timed = [
        (created[nid], receipts[did] - created[nid])
        for did in receipts
        if (nid := s.fanned[did][0]) in created
    ]
    latencies = [lat for _p, lat in timed]
    decided_ts = [ts for _o, _r, ts in s.decided.values()]
    decided_ts += [ts for _nid, ts in s.fanned.values()]
    sent_ts = [e.occurred_at for e in s.ended.values() if e.outcome == Outcome.SENT]
    end_ms = max(receipts.values(), default=None) or max(sent_ts + decided_ts, default=None)
    seconds = (end_ms - first_publish) / 1000 if end_ms else 0.0
    return PhaseResult(
        name=name,
        processes=processes,
        offered_rate=rate,
        requests=total,
        publish_seconds=publish_seconds,
        complete=complete,
        interrupted=interrupted,
        decided=decided,
        deliveries_fanned=len(s.fanned),
        deliveries_ended=len(s.ended),
        delivered=len(receipts),
        duplicate_receipts=duplicates,
        seconds=seconds,
        requests_per_s=decided / seconds if seconds else 0.0,
        deliveries_per_s=len(receipts) / seconds if seconds else 0.0,
        processor_per_s=_rate(decided, first_publish, max(decided_ts, default=None)),
        senders_per_s=_rate(len(sent_ts), min(sent_ts, default=None), max(sent_ts, default=None)),
        latency_ms={
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=None),
        },
        stage_latency_ms=stage_latency(receipts, s.fanned, created),
        outcomes=dict(s.outcomes),
        reasons=dict(s.reasons),
        channels=dict(s.fanned_channel),
        senders_per_channel={
            ch: _rate(len(ts), min(ts), max(ts)) for ch, ts in sorted(by_channel.items())
        },
        latency_drift_ms=latency_drift(timed),
    )
