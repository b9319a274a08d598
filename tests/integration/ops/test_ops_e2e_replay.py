"""After an outage: replay and redrive with a real sender and provider emulators running.

The sender (its real entry point, a consumer group of this test's own) drains the email
topic into the SMTP emulator, whose ledger shows what reached the provider. A window of
deliveries is lost (the group's offsets jump past it while the sender is down); a replay
of the window delivers exactly the lost ones, and nothing twice. A dead letter redriven
after the fault is delivered once. The lag exporter shows the queue growing while the
sender is down and draining once it is back.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cassandra.cluster import Session
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from herald.bench.services import (
    Pipeline,
    sender_group_prefix,
    sender_topics,
    start_groups_at_end,
    wait_for_groups,
)
from herald.ops import dlq
from herald.ops.common import topic_ref
from herald.ops.lag import LagProbe
from herald.ops.replay import ReplayRequest, replay
from herald.services import ServiceSpec, free_port, python_module, running
from infra import topics
from infra.settings import KafkaSettings
from schemas.channels import Channel
from schemas.events import now_ms
from tests.integration.ops.opskit import (
    PREFIX,
    delivery,
    exclusive,
    produce_records,
    set_ledger,
)
from tests.support import wait_for

pytestmark = pytest.mark.e2e
CHANNEL = Channel.EMAIL
TOPIC = PREFIX + topics.channel_topic(CHANNEL)
SENDER = "senders-1"


@pytest.fixture(scope="module")
def pipe(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    p = Pipeline(
        f"opse2e-{uuid.uuid4().hex[:6]}", kafka, tmp_path_factory.mktemp("e2e"), topic_prefix=PREFIX
    )
    try:
        p.start_emulators()
        p.start_sender(1, channel=CHANNEL.value, env={"HERALD_SEND_TIMEOUT_S": "5"})
        wait_for_groups(kafka, [group(p)], 1, timeout=60)
        yield p
    finally:
        p.stop()


def group(p: Pipeline) -> str:
    return f"{sender_group_prefix(p.run_id)}-{CHANNEL}"


def emails(category: str, n: int) -> list[dict]:  # type: ignore[type-arg]
    return [
        delivery(
            CHANNEL.value,
            category,
            address=f"ops-e2e-{uuid.uuid4().hex[:6]}@example.com",
            subject="Your order",
            body="hi",
        )
        for _ in range(n)
    ]


def delivered(p: Pipeline, ids: set[str]) -> Counter[str]:
    rows = httpx.get(f"{p.control_url}/ledger", timeout=10).json()
    return Counter(r["delivery_id"] for r in rows if r["delivery_id"] in ids)


def group_lag(kafka: KafkaSettings, p: Pipeline) -> int:
    probe = LagProbe(kafka)
    try:
        return sum(x.records for x in probe.measure([group(p)]) if x.topic == TOPIC)
    finally:
        probe.close()


def test_replay_after_outage_delivers_exactly_the_lost_window(
    pipe: Pipeline, kafka: KafkaSettings, session: Session, producer: Producer, category: str
) -> None:
    with exclusive(kafka, TOPIC, group(pipe)):
        start = now_ms() - 1
        before = emails(category, 4)
        produce_records(producer, TOPIC, before)
        ids_before = {d["delivery_id"] for d in before}
        wait_for(lambda: len(delivered(pipe, ids_before)) == 4, 30, "the first 4 deliveries")

        # Outage: the sender is down while a batch arrives; the lag rises.
        pipe.services[SENDER].stop()
        lost = emails(category, 3)
        produce_records(producer, TOPIC, lost)
        wait_for(lambda: group_lag(kafka, pipe) >= 3, what="a lag of 3 while the sender is down")
        # ... and the batch is lost downstream: the group's offsets jump past it.
        start_groups_at_end(kafka, {group(pipe): sender_topics(CHANNEL, PREFIX)})
        end = now_ms() + 1
        pipe.restart(SENDER)
        wait_for_groups(kafka, [group(pipe)], 1, timeout=60)
        ids_lost = {d["delivery_id"] for d in lost}
        assert not delivered(pipe, ids_lost)

        req = ReplayRequest(topic_ref(TOPIC, prefix=PREFIX), start, end, category=category)
        dry = replay(kafka, session, ReplayRequest(**{**req.__dict__, "dry_run": True}))
        assert dry.total_produced == 3 and dry.skipped["already_sent"] == 4
        outcome = replay(kafka, session, req)
        assert outcome.produced == {TOPIC: 3} and outcome.skipped["already_sent"] == 4

        everything = ids_before | ids_lost
        wait_for(lambda: len(delivered(pipe, everything)) == 7, 30, "all 7 delivered after replay")
        wait_for(lambda: group_lag(kafka, pipe) == 0, what="the sender group's lag to reach 0")
        # A second replay of the same window finds every delivery sent.
        again = replay(kafka, session, req)
        assert again.total_produced == 0 and again.skipped["already_sent"] == 7
        counts = delivered(pipe, everything)
        assert set(counts) == everything and set(counts.values()) == {1}
        # The sender handled every address; none may appear in its log.
        log_text = pipe.services[SENDER].log_path.read_text(errors="replace")
        assert log_text.strip()
        for d in before + lost:
            assert d["address"] not in log_text


def test_redriven_dead_letter_is_delivered_once(
    pipe: Pipeline, kafka: KafkaSettings, session: Session, producer: Producer, category: str
) -> None:
    with exclusive(kafka, TOPIC, group(pipe)):
        (record,) = emails(category, 1)
        did = record["delivery_id"]
        produce_records(
            producer,
            PREFIX + topics.dlq_topic(CHANNEL),
            [{**record, "attempt": 4}],
            headers=[
                ("herald.reason", b"retries_exhausted"),
                ("herald.attempts", b"4"),
                ("herald.original_topic", TOPIC.encode()),
            ],
        )
        set_ledger(session, record, "dead_lettered")
        ref = topic_ref(CHANNEL.value, dlq=True, prefix=PREFIX)
        pick = dlq.Selection(delivery_ids=frozenset({did}))

        first = dlq.redrive(kafka, session, ref, pick)
        assert first.outcome.produced == {TOPIC: 1}
        wait_for(lambda: delivered(pipe, {did}) == {did: 1}, 30, "the redriven delivery, once")
        wait_for(
            lambda: (
                session.execute(
                    "SELECT state FROM notification_log"
                    " WHERE notification_id = %s AND delivery_id = %s",
                    (record["notification_id"], did),
                ).one()["state"]
                == "sent"
            ),
            what="the ops ledger to say sent",
        )
        second = dlq.redrive(kafka, session, ref, pick, force=True)
        assert second.outcome.total_produced == 0 and second.outcome.skipped == {"already_sent": 1}
        assert delivered(pipe, {did}) == {did: 1}


def _exported_lag(url: str, group_id: str) -> float | None:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name == "herald_consumer_lag_records"
                and s.labels.get("group") == group_id
                and s.labels.get("topic") == TOPIC
            ):
                return s.value
    return None


def test_exported_lag_rises_while_the_sender_is_down_and_falls_when_it_resumes(
    pipe: Pipeline, kafka: KafkaSettings, producer: Producer, category: str, tmp_path: Path
) -> None:
    port = free_port()
    exporter = ServiceSpec(
        "lag",
        python_module("herald.ops.lag"),
        ready_port=port,
        env={
            "HERALD_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "HERALD_LAG__PORT": str(port),
            "HERALD_LAG__HOST": "127.0.0.1",
            "HERALD_LAG__GROUPS": f'["{group(pipe)}"]',
            "HERALD_LAG__INTERVAL_S": "0.5",
        },
    )
    url = f"http://127.0.0.1:{port}/metrics"
    with exclusive(kafka, TOPIC, group(pipe)), running([exporter], tmp_path):
        wait_for(lambda: _exported_lag(url, group(pipe)) == 0, what="an exported lag of 0")
        pipe.services[SENDER].stop()
        queued = emails(category, 5)
        produce_records(producer, TOPIC, queued)
        wait_for(lambda: (_exported_lag(url, group(pipe)) or 0) >= 5, what="an exported lag of 5")

        pipe.restart(SENDER)
        ids = {d["delivery_id"] for d in queued}
        wait_for(lambda: len(delivered(pipe, ids)) == 5, 30, "the 5 queued deliveries")
        wait_for(lambda: _exported_lag(url, group(pipe)) == 0, what="an exported lag of 0")
