from pathlib import Path

import yaml

from infra.stack.cassandra import Cassandra
from infra.stack.jars import lib_dir
from infra.stack.kafka import Kafka
from infra.stack.settings import StackSettings


def _settings(tmp_path: Path) -> StackSettings:
    return StackSettings(
        run_dir=tmp_path,
        kafka_port=19092,
        kafka_controller_port=19093,
        cassandra_port=19042,
        cassandra_storage_port=17000,
    )


def test_kafka_properties_follow_the_configured_ports(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1)
        for line in Kafka(_settings(tmp_path)).server_properties().splitlines()
        if line
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"].startswith(str(tmp_path))
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"


def test_cassandra_yaml_is_valid_and_uses_the_run_dir(tmp_path: Path) -> None:
    cassandra = Cassandra(_settings(tmp_path))
    cassandra.prepare(tmp_path)
    conf = yaml.safe_load((tmp_path / "cassandra" / "cassandra.yaml").read_text())
    assert conf["native_transport_port"] == 19042
    assert conf["storage_port"] == 17000
    assert conf["seed_provider"][0]["parameters"][0]["seeds"] == "127.0.0.1:17000"
    assert conf["data_file_directories"][0].startswith(str(tmp_path))
    # Memtables large enough that a bench's writes do not flush every few seconds, their
    # cells off the heap and their on-heap part well inside the 2 GiB heap.
    assert conf["memtable_allocation_type"] == "offheap_objects"
    assert conf["memtable_heap_space"] == "768MiB"
    assert conf["memtable_offheap_space"] == "1536MiB"
    # One compaction at a time, throttled: never both cores of a 2-core box at once.
    assert conf["concurrent_compactors"] == 1
    assert conf["compaction_throughput"] == "16MiB/s"


def test_cassandra_jvm_gets_java17_flags_and_a_fixed_heap(tmp_path: Path) -> None:
    args = Cassandra(_settings(tmp_path)).java_args(tmp_path)
    assert "-Xmx2G" in args and "-Xms2G" in args
    assert "--add-opens=java.base/java.nio=ALL-UNNAMED" in args
    assert args[-1] == "org.apache.cassandra.service.CassandraDaemon"


def test_jar_cache_is_keyed_by_pom_content(tmp_path: Path) -> None:
    pom = tmp_path / "kafka" / "pom.xml"
    pom.parent.mkdir()
    pom.write_text("<project>1</project>")
    settings = _settings(tmp_path)
    first = lib_dir(pom, settings)
    assert lib_dir(pom, settings) == first
    pom.write_text("<project>2</project>")
    assert lib_dir(pom, settings) != first


def test_client_env_points_services_at_the_stack(tmp_path: Path) -> None:
    env = _settings(tmp_path).client_env()
    assert env["HERALD_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
    assert env["HERALD_CASSANDRA__PORT"] == "19042"
