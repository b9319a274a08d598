"""The running stack answers real requests, and `up` reuses it instead of starting twice."""

import subprocess
import sys

import pytest
from cassandra.cluster import Cluster
from confluent_kafka.admin import AdminClient

from infra.stack.cassandra import Cassandra
from infra.stack.kafka import Kafka
from infra.stack.settings import StackSettings
from infra.topics import all_topics

pytestmark = pytest.mark.integration


def test_up_is_idempotent_and_reuses_healthy_servers() -> None:
    settings = StackSettings()
    pids = {c.name: c.pid() for c in (Kafka(settings), Cassandra(settings))}
    done = subprocess.run(
        [sys.executable, "-m", "infra.stack", "up"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kafka: already running and healthy" in done.stdout
    assert "cassandra: already running and healthy" in done.stdout
    assert "topics: 0 created" in done.stdout
    assert {c.name: c.pid() for c in (Kafka(settings), Cassandra(settings))} == pids


def test_every_declared_topic_exists_with_its_partitions_and_policy() -> None:
    settings = StackSettings()
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    meta = admin.list_topics(timeout=10)
    for spec in all_topics():
        assert spec.name in meta.topics, spec.name
        assert len(meta.topics[spec.name].partitions) == spec.partitions, spec.name
    from confluent_kafka.admin import ConfigResource

    res = ConfigResource(ConfigResource.Type.TOPIC, "users.changes")
    configs = admin.describe_configs([res])[res].result()
    assert configs["cleanup.policy"].value == "compact"


def test_keyspace_tables_and_migration_ledger() -> None:
    settings = StackSettings()
    cluster = Cluster([settings.host], port=settings.cassandra_port, protocol_version=5)
    try:
        session = cluster.connect()
        version = session.execute("SELECT release_version FROM system.local").one()
        assert version.release_version.startswith("5.0")
        tables = {
            r.table_name
            for r in session.execute(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'herald'"
            )
        }
        assert {
            "users",
            "devices_by_user",
            "preferences",
            "templates",
            "notification_log",
        } <= tables
        applied = {
            r.version for r in session.execute("SELECT version FROM herald.schema_migrations")
        }
        assert "001_core" in applied
    finally:
        cluster.shutdown()


def test_status_command_reports_both_healthy() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "infra.stack", "status"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.count("healthy") >= 2
