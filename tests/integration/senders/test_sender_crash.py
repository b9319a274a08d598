"""SIGKILL a sender with sends in flight, start another: nothing is sent twice, and every
delivery ends in exactly one outcome. Deliveries caught in the window (claimed, maybe
accepted, not recorded) end dead-lettered as `uncertain_after_crash`, never resent; the
operator's documented step (check the provider's record, redrive what it never got) then
leaves every delivery sent exactly once."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cassandra.cluster import Session

from herald.bench.services import (
    Ports,
    emulator_spec,
    provider_env,
    sender_topics,
    start_groups_at_end,
)
from herald.ops import dlq
from herald.ops.common import topic_ref
from herald.services import Service, ServiceSpec, free_port, python_module, start
from infra.settings import KafkaSettings
from schemas.channels import Channel
from tests.conftest import KAFKA
from tests.integration.senders.conftest import PREFIX, ledger_row, make_delivery
from tests.support import wait_for

pytestmark = pytest.mark.integration

N = 12


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + "{"))


class Crash:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.ports = Ports.pick()
        self.group = f"test-sender-crash-{uuid.uuid4().hex[:8]}"
        self.control = httpx.Client(base_url=self.ports.control_url, timeout=10)
        self.started: list[Service] = []
        # A new group starting at "latest" resolves that position at its first fetch, which
        # can come after the test's first records: commit the topics' end offsets up front.
        lanes = sender_topics(Channel.SMS, PREFIX)
        start_groups_at_end(KafkaSettings(bootstrap_servers=KAFKA), {f"{self.group}-sms": lanes})

    def sender(self, name: str) -> tuple[Service, int]:
        metrics = free_port()
        spec = ServiceSpec(
            name=name,
            argv=python_module("senders", "run", "--channel", "sms"),
            ready_port=metrics,
            env={
                **provider_env(self.ports),
                "HERALD_GROUP_PREFIX": self.group,
                "HERALD_START_AT": "latest",
                "HERALD_TOPIC_PREFIX": PREFIX,
                "HERALD_METRICS_PORT": str(metrics),
                "HERALD_INSTANCE_ID": f"{self.group}-{name}",
                "HERALD_RETRY__CLAIM_STALE_AFTER_S": "6",
                "HERALD_SEND_TIMEOUT_S": "5",
                "HERALD_MAX_IN_FLIGHT": "4",  # the batch goes out in waves
                "HERALD_SESSION_TIMEOUT_MS": "6000",
            },
        )
        svc = start(spec, self.log_dir)
        self.started.append(svc)
        wait_for(lambda: metric(metrics, "herald_sender_assigned_partitions") == 15, 60, name)
        return svc, metrics


@pytest.fixture
def crash(tmp_path: Path) -> Iterator[Crash]:
    c = Crash(tmp_path)
    emulators = start(emulator_spec(c.ports), tmp_path)
    try:
        yield c
    finally:
        for svc in c.started:  # a failed wait must not leave a sender taking later tests' records
            svc.stop()
        emulators.stop()


def states(session: Session, deliveries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rows = (ledger_row(session, d) for d in deliveries)
    return {r["delivery_id"]: r for r in rows if r is not None}


def test_sigkill_mid_batch_never_sends_twice(
    crash: Crash, produce: Any, cassandra: Session
) -> None:
    first, _ = crash.sender("sender-a")
    # Slow answers keep sends in flight at the moment of the kill.
    crash.control.post("/faults", json={"provider": "twilio", "mode": "slow", "latency_ms": 2000})
    batch = [make_delivery("sms", address="+1555" + str(uuid.uuid4().int)[:7]) for _ in range(N)]
    ids = [d["delivery_id"] for d in batch]
    for d in batch:
        produce("notifications.sms", d)

    def mid_batch() -> bool:
        rows = states(cassandra, batch).values()
        return any(r["state"] == "sending" for r in rows) and any(
            r["state"] == "sent" for r in rows
        )

    wait_for(mid_batch, 30, "some sent, some in flight")
    # From here the provider holds requests without accepting them: the sends in flight
    # at the kill are a mix of accepted-but-unrecorded and never-accepted.
    crash.control.post("/faults", json={"provider": "twilio", "mode": "ok"})
    crash.control.post("/faults", json={"provider": "twilio", "mode": "timeout"})
    time.sleep(2.5)  # the slow sends already in flight finish (2 s latency); the next are held
    wait_for(
        lambda: sum(r["state"] == "sending" for r in states(cassandra, batch).values()) >= 1,
        30,
        "sends held by the provider",
    )
    first.kill()
    crash.control.post("/faults", json={"provider": "all", "mode": "ok"})
    second, _ = crash.sender("sender-b")
    try:
        final = {"sent", "dead_lettered"}
        done = wait_for(
            lambda: (
                (s := states(cassandra, batch))
                and all(s.get(i, {}).get("state") in final and s[i]["published"] for i in ids)
                and s
            ),
            60,
            "every delivery final",
        )
    finally:
        second.stop()

    receipts = Counter(e["delivery_id"] for e in crash.control.get("/ledger").json())
    assert all(receipts[i] <= 1 for i in ids), "a delivery reached the provider twice"
    outcome = Counter(r["state"] for r in done.values())
    assert outcome["sent"] + outcome["dead_lettered"] == N
    reasons = Counter(r["reason"] for r in done.values() if r["state"] == "dead_lettered")
    for did, row in done.items():
        if row["state"] == "sent":
            assert receipts[did] == 1
    # Dead letters are the uncertain ones only, none of them resent: the kill's window
    # (and, on a very slow machine, a send timeout).
    assert set(reasons) <= {"uncertain_after_crash", "uncertain_timeout"}, reasons
    assert reasons["uncertain_after_crash"] >= 1
    assert outcome["sent"] > 0
    assert outcome["sent"] < N, "the kill came too late to test anything"

    # The operator's step (docs/senders.md): the provider's own record (here the
    # emulator's ledger) says which uncertain ones never arrived; only those are redriven.
    lost = {i for i in ids if done[i]["state"] == "dead_lettered" and receipts[i] == 0}
    assert lost, "the provider held sends at the kill: some never arrived"
    print(
        f"\n{reasons['uncertain_after_crash']} uncertain after the kill, {len(lost)} never arrived"
    )
    if lost:
        ref = topic_ref("sms", dlq=True, prefix=PREFIX)
        kafka = KafkaSettings(bootstrap_servers=KAFKA)
        wait_for(lambda: lost <= {d.delivery_id for d in dlq.read(kafka, ref)}, 30, "DLQ")
        result = dlq.redrive(kafka, cassandra, ref, dlq.Selection(delivery_ids=frozenset(lost)))
        assert len(result.redriven) == len(lost)
        redriven = [d for d in batch if d["delivery_id"] in lost]
        third, _ = crash.sender("sender-c")
        try:
            wait_for(
                lambda: all(r["state"] == "sent" for r in states(cassandra, redriven).values()),
                60,
                "redriven deliveries sent",
            )
        finally:
            third.stop()
    receipts = Counter(e["delivery_id"] for e in crash.control.get("/ledger").json())
    assert [receipts[i] for i in ids] == [1] * N, "each delivery must reach the provider once"
