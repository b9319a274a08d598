"""Every Kafka topic herald uses, declared once. Part of the public contract (README).

Keys: the request topic and every channel topic are keyed by user id (per-user order);
the status topic by notification id; `users.changes` by user id and `templates.changes`
by template id (both compacted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.channels import Channel

# The names are the contract's (`schemas.contract`); this module adds their configuration.
from schemas.contract import REQUESTED as REQUESTED
from schemas.contract import REQUESTED_DLQ as REQUESTED_DLQ
from schemas.contract import REQUESTED_PRIORITY as REQUESTED_PRIORITY
from schemas.contract import RETRY_TIERS as RETRY_TIERS
from schemas.contract import STATUS as STATUS
from schemas.contract import TEMPLATE_CHANGES as TEMPLATE_CHANGES
from schemas.contract import USER_CHANGES as USER_CHANGES
from schemas.contract import channel_topic as channel_topic
from schemas.contract import dlq_topic as dlq_topic
from schemas.contract import retry_topic as retry_topic

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int = 1
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: str = "delete"
    extra: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup_policy, **self.extra}
        if self.cleanup_policy == "delete":
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


def all_topics(replication: int = 1) -> list[TopicSpec]:
    specs = [
        TopicSpec(REQUESTED, partitions=6, replication=replication),
        TopicSpec(REQUESTED_PRIORITY, partitions=6, replication=replication),
        TopicSpec(REQUESTED_DLQ, partitions=1, replication=replication, retention_ms=30 * DAY_MS),
        TopicSpec(STATUS, partitions=3, replication=replication, retention_ms=30 * DAY_MS),
        *(
            TopicSpec(
                name,
                partitions=partitions,
                replication=replication,
                cleanup_policy="compact",
                extra={"min.compaction.lag.ms": "60000"},
            )
            for name, partitions in ((USER_CHANGES, 3), (TEMPLATE_CHANGES, 1))
        ),
    ]
    for ch in Channel:
        specs.append(TopicSpec(channel_topic(ch), partitions=3, replication=replication))
        specs.append(
            TopicSpec(channel_topic(ch, priority=True), partitions=3, replication=replication)
        )
        specs.extend(
            TopicSpec(retry_topic(ch, t), partitions=3, replication=replication)
            for t in range(1, RETRY_TIERS + 1)
        )
        specs.append(
            TopicSpec(
                dlq_topic(ch), partitions=1, replication=replication, retention_ms=30 * DAY_MS
            )
        )
    return specs


def ensure_topics(bootstrap_servers: str, replication: int = 1, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; existing ones are left as they are. Returns those created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in all_topics(replication) if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication, config=s.config()) for s in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            # Another process created it between our listing and our request.
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created
