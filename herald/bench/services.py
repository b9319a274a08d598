"""The herald processes a benchmark run or a fault scenario starts, as real OS processes.

Every run gets its own emulators (free ports) and its own consumer groups starting at the
topics' end, so it never shares work with a demo, a test or another run on the same broker.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from herald.bench.kafkautil import create_topics, delete_topics, end_offsets
from herald.services import Service, ServiceError, ServiceSpec, free_port, python_module, start
from infra import topics
from infra.emulators.server import Ports
from infra.settings import DEV_PROFILE, KafkaSettings
from schemas.channels import Channel
from schemas.contract import Topics
from senders.settings import RateLimitSettings

# The senders' per-provider token buckets protect real providers' quotas; the emulators have
# none, and the bench measures herald, not the configured quotas. Rates given per provider
# merge over the defaults, so every provider is named: an empty map left SMTP at 200/s and
# Twilio at 100/s, which capped the end-to-end figure near 800 deliveries/s.
UNLIMITED_PER_SECOND = 100_000
BENCH_SENDER_ENV = {
    "HERALD_RATE_LIMITS__DEFAULT_PER_SECOND": str(UNLIMITED_PER_SECOND),
    "HERALD_RATE_LIMITS__PER_SECOND": json.dumps(
        {provider: UNLIMITED_PER_SECOND for provider in RateLimitSettings().per_second}
    ),
}


def emulator_spec(ports: Ports, *, lean: bool = False, receipts: Path | None = None) -> ServiceSpec:
    """`lean`: the benchmark emulators (no faults); `receipts`: the ledger goes to that file,
    so the emulators' memory stays flat however long the run."""
    extra = {"HERALD_EMULATORS__LEAN": "true"} if lean else {}
    if receipts is not None:
        extra["HERALD_EMULATORS__RECEIPTS_FILE"] = str(receipts)
    return ServiceSpec(
        name="emulators",
        argv=python_module("infra.emulators"),
        ready_port=ports.control,
        env={
            "HERALD_EMULATORS__APNS_PORT": str(ports.apns),
            "HERALD_EMULATORS__FCM_PORT": str(ports.fcm),
            "HERALD_EMULATORS__TWILIO_PORT": str(ports.twilio),
            "HERALD_EMULATORS__VONAGE_PORT": str(ports.vonage),
            "HERALD_EMULATORS__SMTP_PORT": str(ports.smtp),
            "HERALD_EMULATORS__SENDGRID_PORT": str(ports.sendgrid),
            "HERALD_EMULATORS__CONTROL_PORT": str(ports.control),
            **extra,
        },
    )


def provider_env(ports: Ports) -> dict[str, str]:
    """Point every provider client at this run's emulators."""
    return {
        "HERALD_PROVIDERS__APNS__URL": f"https://127.0.0.1:{ports.apns}",
        "HERALD_PROVIDERS__FCM__URL": f"http://127.0.0.1:{ports.fcm}",
        "HERALD_PROVIDERS__TWILIO__URL": f"http://127.0.0.1:{ports.twilio}",
        "HERALD_PROVIDERS__VONAGE__URL": f"http://127.0.0.1:{ports.vonage}",
        "HERALD_PROVIDERS__SMTP__PORT": str(ports.smtp),
        "HERALD_PROVIDERS__SENDGRID__URL": f"http://127.0.0.1:{ports.sendgrid}",
    }


def processor_group(run_id: str) -> str:
    return f"herald-processor-{run_id}"


def sender_group_prefix(run_id: str) -> str:
    return f"herald-sender-{run_id}"


def sender_groups(run_id: str, channels: Iterable[Channel] = tuple(Channel)) -> list[str]:
    return [f"{sender_group_prefix(run_id)}-{ch}" for ch in channels]


def processor_spec(
    run_id: str, index: int, *, topic_prefix: str = "", extra_env: dict[str, str] | None = None
) -> ServiceSpec:
    metrics = free_port()
    return ServiceSpec(
        name=f"processor-{index}",
        argv=python_module("processors"),
        ready_port=metrics,
        env={
            "HERALD_TOPIC_PREFIX": topic_prefix,
            "HERALD_APP_ID": processor_group(run_id),
            "HERALD_METRICS_PORT": str(metrics),
            # Faust binds its web port even when its web views are off: never the default.
            "HERALD_WEB_PORT": str(free_port()),
            # A local stack: the published tracking key may sign links.
            "HERALD_PROFILE": DEV_PROFILE,
            **(extra_env or {}),
        },
    )


def sender_spec(
    run_id: str,
    index: int,
    ports: Ports,
    *,
    channel: str = "all",
    topic_prefix: str = "",
    extra_env: dict[str, str] | None = None,
) -> ServiceSpec:
    metrics = free_port()
    return ServiceSpec(
        name=f"senders-{index}",
        argv=python_module("senders", "run", "--channel", channel),
        ready_port=metrics,
        env={
            "HERALD_TOPIC_PREFIX": topic_prefix,
            "HERALD_GROUP_PREFIX": sender_group_prefix(run_id),
            "HERALD_START_AT": "latest",
            "HERALD_METRICS_PORT": str(metrics),
            **provider_env(ports),
            **(extra_env or {}),
        },
    )


def processor_topics(prefix: str = "") -> list[str]:
    return [Topics(prefix).requested, Topics(prefix).user_changes]


def sender_topics(channel: Channel, prefix: str = "") -> list[str]:
    named = Topics(prefix)
    return [
        named.channel(channel),
        named.channel(channel, priority=True),
        *named.retries(channel),
    ]


def ensure_prefixed_topics(kafka: KafkaSettings, prefix: str) -> None:
    """herald's whole topic family under `prefix` (same partitions), created if missing."""
    named = Topics(prefix)
    create_topics(
        kafka,
        [
            NewTopic(named.of(t.name), t.partitions, t.replication, config=t.config())
            for t in topics.all_topics()
        ],
    )


def start_groups_at_end(kafka: KafkaSettings, groups: dict[str, list[str]]) -> None:
    """Commit the topics' end offsets for brand-new groups, so a run's processes read only
    what the run publishes, never the backlog others left on the shared topics."""
    for group, names in groups.items():
        consumer = Consumer(
            {**kafka.base_config("bench-groups"), "group.id": group, "enable.auto.commit": False}
        )
        try:
            ends = [tp for topic in names for tp in end_offsets(consumer, topic)]
            consumer.commit(offsets=ends, asynchronous=False)
        finally:
            consumer.close()


def wait_for_groups(
    kafka: KafkaSettings, groups: Iterable[str], members: int, timeout: float = 60.0
) -> None:
    """Block until each consumer group is stable with `members` members: before that, records
    published would race the groups' first assignment (they start at the topics' end)."""
    admin = AdminClient(dict(kafka.base_config("bench-admin")))
    pending = set(groups)
    deadline = time.monotonic() + timeout
    while pending:
        for gid, fut in admin.describe_consumer_groups(list(pending)).items():
            try:
                desc = fut.result()
            except Exception:  # not created yet: the member has not joined
                continue
            if str(desc.state).endswith("STABLE") and len(desc.members) >= members:
                pending.discard(gid)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"groups not stable after {timeout:.0f}s: {sorted(pending)}")
        time.sleep(0.5)


@dataclass
class Pipeline:
    """Emulators, processors and senders of one run; each can be killed and started again."""

    run_id: str
    kafka: KafkaSettings
    log_dir: Path
    # Non-empty: the run gets its own copy of every herald topic (HERALD_TOPIC_PREFIX of the
    # processor and the senders), so no other herald on the broker takes part in it.
    topic_prefix: str = ""
    ports: Ports = field(default_factory=Ports.pick)
    services: dict[str, Service] = field(default_factory=dict)
    specs: dict[str, ServiceSpec] = field(default_factory=dict)
    _starts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.topic_prefix:
            ensure_prefixed_topics(self.kafka, self.topic_prefix)
        pre = self.topic_prefix
        groups = {processor_group(self.run_id): processor_topics(pre)}
        groups.update(
            {f"{sender_group_prefix(self.run_id)}-{ch}": sender_topics(ch, pre) for ch in Channel}
        )
        start_groups_at_end(self.kafka, groups)

    def topic(self, name: str) -> str:
        """The run's name of one of herald's topics (infra.topics)."""
        return Topics(self.topic_prefix).of(name)

    @property
    def control_url(self) -> str:
        return self.ports.control_url

    @property
    def instance_prefix(self) -> str:
        """Every sender of this run writes claims as `<run id>.<name>.<start>`."""
        return f"{self.run_id}."

    def _start(self, spec: ServiceSpec) -> Service:
        self.specs[spec.name] = spec
        self._starts[spec.name] = self._starts.get(spec.name, 0) + 1
        if spec.name.startswith("senders"):
            instance = f"{self.instance_prefix}{spec.name}.{self._starts[spec.name]}"
            spec = replace(spec, env={**spec.env, "HERALD_INSTANCE_ID": instance})
        svc = start(spec, self.log_dir, timeout=90)
        self.services[spec.name] = svc
        return svc

    def start_emulators(self, *, lean: bool = False) -> Service:
        receipts = self.log_dir / "emulator-receipts.jsonl"
        return self._start(emulator_spec(self.ports, lean=lean, receipts=receipts))

    def start_processor(self, index: int = 1, env: dict[str, str] | None = None) -> Service:
        return self._start(
            processor_spec(self.run_id, index, topic_prefix=self.topic_prefix, extra_env=env)
        )

    def start_sender(
        self, index: int = 1, *, channel: str = "all", env: dict[str, str] | None = None
    ) -> Service:
        spec = sender_spec(
            self.run_id,
            index,
            self.ports,
            channel=channel,
            topic_prefix=self.topic_prefix,
            extra_env=env,
        )
        return self._start(spec)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hook, no offset commit, no flush."""
        self.services[name].kill()

    def restart(self, name: str) -> Service:
        """Start the same process again: same groups, same ports, same settings."""
        old = self.services.get(name)
        if old is not None and old.alive():
            old.stop()
        return self._start(self.specs[name])

    def wait_ready(self, processors: int = 1, senders: int = 1, timeout: float = 60.0) -> None:
        if processors:
            wait_for_groups(self.kafka, [processor_group(self.run_id)], processors, timeout)
        if senders:
            wait_for_groups(self.kafka, sender_groups(self.run_id), senders, timeout)

    def check_alive(self) -> None:
        """Raise if a process died without being told to (a crash, an outside kill)."""
        for name, svc in self.services.items():
            if not svc.alive():
                raise ServiceError(f"{name} exited (code {svc.proc.returncode}):\n{svc.log_tail()}")

    def faults(self, **fault: object) -> None:
        """POST /faults to the emulators, e.g. provider="apns", mode="error", status=500."""
        httpx.post(f"{self.control_url}/faults", json=fault, timeout=10).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.control_url}/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        """Stop every service, then drop the processor's Faust topics (changelogs,
        repartitions) of this run: they are the run's alone, and thousands of leftovers
        slow the broker's start and inflate its CPU in later runs."""
        for svc in reversed(list(self.services.values())):
            svc.stop()
        self.services.clear()
        with contextlib.suppress(KafkaException):
            admin = AdminClient(dict(self.kafka.base_config("herald-pipeline-admin")))
            delete_topics(admin, (processor_group(self.run_id) + "-",))
