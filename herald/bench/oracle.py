"""The oracle of the fault suite and the benchmark: nothing lost, nothing doubled.

Publish known requests; afterwards every one must have ended in exactly one way:

- delivered: each of its deliveries reached the provider emulator, at most once per
  delivery id (the emulator's ledger is the ground truth of what a provider received);
- dropped with a reason (opt-out, unknown user, invalid contact, ...) on the status topic;
- dead-lettered with a reason: a status event, or a record with a `herald.reason` header on
  a dead-letter topic (undecodable bytes cannot name their notification, so they are
  matched by their Kafka key).

A delivery that was fanned out must end too: sent (and in the ledger), failed, dropped or
dead-lettered. The counts add up to what was published, or `Verdict.problems` says which
id went missing or arrived twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cassandra.cluster import Session
from confluent_kafka import Consumer

from herald.bench.kafkautil import end_offsets
from infra import topics
from infra.settings import KafkaSettings
from schemas import codec
from schemas.channels import Channel, Outcome
from schemas.contract import Header, Topics

FINAL = frozenset({Outcome.SENT, Outcome.FAILED, Outcome.DEAD_LETTERED, Outcome.DROPPED})


def _headers(
    raw: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None,
) -> dict[str, str]:
    pairs = raw.items() if isinstance(raw, dict) else raw or []
    return {k: v.decode(errors="replace") if isinstance(v, bytes) else (v or "") for k, v in pairs}


def watched_topics(prefix: str = "") -> list[str]:
    named = Topics(prefix)
    out = [named.status, named.requested_dlq]
    for ch in Channel:
        out += [named.channel(ch), named.channel(ch, priority=True), named.dlq(ch)]
    return out


@dataclass
class Seen:
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    fanned: dict[str, dict[str, Any]] = field(default_factory=dict)  # delivery id → Delivery
    fanned_count: Counter[str] = field(default_factory=Counter)  # records per delivery id
    by_notification: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Kafka key → reasons of dead letters on notifications.requested.dlq
    rejected: dict[bytes, list[str]] = field(default_factory=lambda: defaultdict(list))
    # delivery id → reasons of records on a channel's dead-letter topic
    dead_letters: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class RequestFate:
    notification_id: str
    outcome: str  # delivered | dropped | dead_lettered | failed | partial | missing
    reason: str | None = None
    deliveries: dict[str, str] = field(default_factory=dict)  # delivery id → its outcome


@dataclass
class Verdict:
    fates: dict[str, RequestFate]
    rejected: dict[bytes, list[str]]
    receipts: Counter[str]  # delivery id → ledger entries
    problems: list[str]
    # Sent by a sender outside the run (ledger owner), so absent from this run's emulator.
    foreign: list[str] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        c = Counter(f.outcome for f in self.fates.values())
        c["rejected"] = len(self.rejected)
        return c

    @property
    def reasons(self) -> Counter[str]:
        """`outcome:reason` of every request that was not delivered in full."""
        return Counter(
            f"{f.outcome}:{f.reason}" for f in self.fates.values() if f.outcome != "delivered"
        )

    @property
    def delivered_ids(self) -> set[str]:
        return {d for d, n in self.receipts.items() if n}

    def summary(self) -> str:
        head = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        if self.foreign:
            head += f" ({len(self.foreign)} sent by a sender outside this run)"
        if self.reasons:
            head += " [" + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) + "]"
        if not self.problems:
            return f"ok: {head}"
        more = f" (+{len(self.problems) - 20} more)" if len(self.problems) > 20 else ""
        return f"{head}\n" + "\n".join(self.problems[:20]) + more


class Oracle:
    """Watches the status, channel and dead-letter topics from the moment it is created."""

    def __init__(
        self,
        kafka: KafkaSettings,
        control_url: str,
        *,
        session: Session | None = None,
        instance_prefix: str | None = None,
        topic_prefix: str = "",
    ) -> None:
        """With `session` and `instance_prefix` (the run's sender instance ids), a delivery
        reported sent but absent from this run's emulator is looked up in the delivery
        ledger: claimed by a sender outside the run (another herald on the same broker), it
        counts as delivered elsewhere instead of lost."""
        self.kafka = kafka
        self.values = codec.codec_for(kafka.schema_registry_url)
        self.control_url = control_url
        self.topic_prefix = topic_prefix
        self.session = session
        self.instance_prefix = instance_prefix
        self._owners: dict[str, str | None] = {}
        self.seen = Seen()
        self._lock = threading.Lock()
        self._expected: dict[str, dict[str, Any]] = {}  # notification id → request
        self._expected_rejects: set[bytes] = set()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                **kafka.base_config("oracle"),
                "group.id": f"herald-oracle-{time.time_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        start = []
        for topic in watched_topics(topic_prefix):
            start += end_offsets(self._consumer, topic)
        self._consumer.assign(start)
        self._thread = threading.Thread(target=self._run, name="oracle", daemon=True)
        self._thread.start()

    # -- what the test published --------------------------------------------------------

    def expect(self, requests: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for r in requests:
                self._expected[r["notification_id"]] = r

    def expect_rejected(self, key: bytes) -> None:
        """A record that cannot be read as a request; it must be dead-lettered by key."""
        with self._lock:
            self._expected_rejects.add(key)

    # -- following the topics -----------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for msg in self._consumer.consume(num_messages=500, timeout=0.3):
                    value = msg.value()
                    if msg.error() or value is None:
                        continue
                    headers = _headers(msg.headers())
                    with self._lock:
                        self._on_record(msg.topic() or "", msg.key(), value, headers)
        finally:
            self._consumer.close()

    def _on_record(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str]
    ) -> None:
        s = self.seen
        topic = topic.removeprefix(self.topic_prefix)
        if topic == topics.REQUESTED_DLQ:
            if key is not None:
                s.rejected[key].append(headers.get(Header.REASON, ""))
            try:
                req = self.values.decode(value, codec.REQUEST)
            except codec.DecodeError:
                return
            s.statuses[req["notification_id"]].append(
                {
                    "outcome": Outcome.DEAD_LETTERED,
                    "reason": headers.get(Header.REASON),
                    "delivery_id": None,
                    "via": "requested.dlq",
                }
            )
            return
        try:
            record = self.values.decode(value)
        except codec.DecodeError:
            return
        if topic == topics.STATUS:
            s.statuses[record["notification_id"]].append(record)
        elif topic.endswith(".dlq"):
            if "delivery_id" in record:
                s.dead_letters[record["delivery_id"]].append(headers.get(Header.REASON, ""))
        elif "delivery_id" in record:
            s.fanned.setdefault(record["delivery_id"], record)
            s.fanned_count[record["delivery_id"]] += 1
            s.by_notification[record["notification_id"]].add(record["delivery_id"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    # -- judging --------------------------------------------------------------------------

    def ledger(self) -> Counter[str]:
        resp = httpx.get(f"{self.control_url}/ledger", timeout=60)
        resp.raise_for_status()
        data = resp.json()
        entries = data if isinstance(data, list) else data.get("entries", [])
        return Counter(str(e.get("delivery_id")) for e in entries)

    def _judge(self, receipts: Counter[str], final: bool) -> Verdict:
        problems: list[str] = []
        foreign: list[str] = []
        fates: dict[str, RequestFate] = {}
        s = self.seen
        for nid in self._expected:
            events = s.statuses.get(nid, [])
            deliveries = s.by_notification.get(nid, set())
            fate = RequestFate(nid, "missing")
            request_level = [
                e for e in events if e.get("delivery_id") is None and e["outcome"] in FINAL
            ]
            per_delivery: dict[str, str] = {}
            for did in deliveries:
                ends = {
                    e["outcome"]
                    for e in events
                    if e.get("delivery_id") == did and e["outcome"] in FINAL
                }
                if receipts.get(did):
                    per_delivery[did] = Outcome.SENT
                    if receipts[did] > 1:
                        problems.append(f"doubled: delivery {did} received {receipts[did]}x")
                elif Outcome.SENT in ends and self._foreign(nid, did):
                    per_delivery[did] = Outcome.SENT
                    foreign.append(did)
                elif Outcome.SENT in ends:
                    per_delivery[did] = "sent_not_received"
                    problems.append(f"lost: delivery {did} reported sent, not in the ledger")
                elif ends or s.dead_letters.get(did):
                    per_delivery[did] = sorted(ends)[0] if ends else Outcome.DEAD_LETTERED
                    if len(ends) > 1:
                        problems.append(f"two outcomes for delivery {did}: {sorted(ends)}")
                    reasons = [
                        e.get("reason")
                        for e in events
                        if e.get("delivery_id") == did and e["outcome"] in FINAL
                    ] + s.dead_letters.get(did, [])
                    fate.reason = fate.reason or next((r for r in reasons if r), None)
                    if not any(reasons):
                        problems.append(f"{per_delivery[did]} without a reason: delivery {did}")
                else:
                    per_delivery[did] = "pending"
            fate.deliveries = per_delivery
            ends = set(per_delivery.values())
            if request_level and not deliveries:
                first = request_level[0]
                fate.outcome, fate.reason = first["outcome"], first.get("reason")
                if not fate.reason:
                    problems.append(f"{fate.outcome} without a reason: request {nid}")
            elif deliveries and "pending" not in ends and "sent_not_received" not in ends:
                fate.outcome = (
                    "delivered"
                    if ends == {Outcome.SENT}
                    else next(iter(ends))
                    if len(ends) == 1
                    else "partial"
                )
            elif final:
                pending = [d for d, o in per_delivery.items() if o == "pending"]
                problems.append(
                    f"lost: request {nid} has no outcome"
                    + (f" ({len(pending)} deliveries pending)" if pending else "")
                )
            fates[nid] = fate
        for key in self._expected_rejects:
            rejects = s.rejected.get(key, [])
            if not rejects and final:
                problems.append(f"lost: rejected record {key!r} not dead-lettered")
            elif len(rejects) > 1:
                problems.append(f"doubled: rejected record {key!r} dead-lettered {len(rejects)}x")
            elif rejects and not rejects[0]:
                problems.append(f"dead letter {key!r} without a {Header.REASON} header")
        return Verdict(
            fates,
            {k: v for k, v in s.rejected.items() if k in self._expected_rejects},
            # Other runs may share the emulator: only this run's deliveries are judged.
            Counter({d: n for d, n in receipts.items() if d in s.fanned}),
            problems,
            foreign,
        )

    def _foreign(self, notification_id: str, delivery_id: str) -> bool:
        if self.session is None or self.instance_prefix is None:
            return False
        if delivery_id not in self._owners:
            row = self.session.execute(
                "SELECT owner, state FROM herald.notification_log"
                " WHERE notification_id = %s AND delivery_id = %s",
                (notification_id, delivery_id),
            ).one()
            if not row or row["state"] != "sent":
                return False  # not settled yet: ask again next time
            self._owners[delivery_id] = row["owner"]
        owner = self._owners[delivery_id]
        return owner is not None and not owner.startswith(self.instance_prefix)

    def fanout_counts(self, notification_ids: Iterable[str]) -> dict[str, int]:
        """Channel-topic records seen per delivery of these notifications (replays add)."""
        with self._lock:
            return {
                did: self.seen.fanned_count[did]
                for nid in notification_ids
                for did in self.seen.by_notification.get(nid, ())
            }

    def settled(self) -> bool:
        with self._lock:
            v = self._judge(self.ledger(), final=False)
        done = all(f.outcome != "missing" for f in v.fates.values())
        return done and all(k in v.rejected for k in self._expected_rejects)

    def wait(self, timeout: float = 60.0, quiet_s: float = 2.0) -> Verdict:
        """Poll until every expected id has settled, then look `quiet_s` longer for doubles."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.settled():
                time.sleep(quiet_s)  # a duplicate arrives after the original, if at all
                break
            time.sleep(0.5)
        with self._lock:
            return self._judge(self.ledger(), final=True)
