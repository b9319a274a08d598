"""Apache Cassandra 5.0 as a single node on the loopback, with a small explicit heap."""

from __future__ import annotations

from pathlib import Path

from infra.stack.component import Component

# From Cassandra's conf/jvm17-server.options: the JDK internals it reaches into.
JVM17_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.math=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
]

CASSANDRA_YAML = """\
cluster_name: herald
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{host}:{storage_port}"
listen_address: {host}
rpc_address: {host}
storage_port: {storage_port}
native_transport_port: {native_port}
start_native_transport: true
data_file_directories:
  - {data}/data
commitlog_directory: {data}/commitlog
saved_caches_directory: {data}/saved_caches
hints_directory: {data}/hints
cdc_raw_directory: {data}/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
concurrent_reads: 16
concurrent_writes: 16
concurrent_counter_writes: 8
# Memtables flush once they fill `memtable_cleanup_threshold` (1/3) of this space. At 128 MiB
# on the heap they flushed every few seconds under load, in 1-3 MiB sstables, and merging
# those again and again took 40-50% of Cassandra's CPU (Flight Recorder, issue 15). Cells
# off the heap and room to grow (the heap is 2 GiB, `cassandra_heap`): far fewer flushes,
# and a ledger row's claim and finish meet in the memtable.
memtable_allocation_type: offheap_objects
memtable_heap_space: 768MiB
memtable_offheap_space: 1536MiB
key_cache_size: 16MiB
# Single node on a laptop-sized machine: no snapshots on drop/truncate, quick shutdown.
auto_snapshot: false
disk_failure_policy: stop
commit_failure_policy: stop
write_request_timeout: 5000ms
read_request_timeout: 5000ms
# herald writes per batch (dedup marks, ledger outcomes): unlogged batches of up to 100
# partitions are its normal shape, not a mistake worth a warning per query.
batch_size_warn_threshold: 64KiB
batch_size_fail_threshold: 640KiB
unlogged_batch_across_partitions_warn_threshold: 100
# Paxos v2: two round trips per uncontended lightweight transaction instead of four.
paxos_variant: v2
# One compaction at a time, at most 16 MiB/s: with the defaults (2 and 64 MiB/s) a compaction
# of herald's tables could take both cores of a 2-core box for seconds, and a saturating
# phase that met one showed Cassandra at 566-598 µs of CPU per delivery against 340-410
# otherwise. Nine interleaved runs each (docs/benchmarks.md, runs of 2026-11-30 05:30-06:40):
# median 1,567 against 1,520 deliveries/s, paced p99 at 1,000 requests/s 957 against
# 2,353 ms. herald compacted ~0.7 MB/s over half an hour of benchmarks: 16 MiB/s keeps up.
concurrent_compactors: 1
compaction_throughput: 16MiB/s
"""

LOGBACK = """\
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>{logs}/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>{logs}/system.log.%i</fileNamePattern>
      <minIndex>1</minIndex><maxIndex>3</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>50MB</maxFileSize>
    </triggeringPolicy>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""


class Cassandra(Component):
    name = "cassandra"

    @property
    def port(self) -> int:
        return self.settings.cassandra_port

    def prepare(self, lib: Path) -> None:
        s = self.settings
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (self.home / "cassandra.yaml").write_text(
            CASSANDRA_YAML.format(
                host=s.host,
                storage_port=s.cassandra_storage_port,
                native_port=s.cassandra_port,
                data=self.home,
            )
        )
        (self.home / "logback.xml").write_text(LOGBACK.format(logs=logs))

    def java_args(self, lib: Path) -> list[str]:
        heap = self.settings.cassandra_heap
        jamm = sorted(lib.glob("jamm-*.jar"))
        return [
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-Xss256k",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=300",
            "-XX:+AlwaysPreTouch",
            "-XX:+PerfDisableSharedMem",
            *JVM17_FLAGS,
            # jamm measures memtable sizes; Cassandra's own scripts load it as an agent.
            *([f"-javaagent:{jamm[-1]}"] if jamm else []),
            "-Djava.net.preferIPv4Stack=true",
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.config=file://{self.home / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={self.home}",
            f"-Dcassandra.logdir={self.home / 'logs'}",
            f"-Dlogback.configurationFile={self.home / 'logback.xml'}",
            # One seed node, nothing to gossip with: skip the waits meant for real clusters.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=100",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-cp",
            f"{lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def probe(self) -> str:
        from cassandra.cluster import Cluster

        cluster = Cluster(
            [self.settings.host],
            port=self.port,
            connect_timeout=3,
            control_connection_timeout=3,
            protocol_version=5,
        )
        try:
            session = cluster.connect()
            row = session.execute("SELECT release_version FROM system.local", timeout=5).one()
            return f"Cassandra {row.release_version}"
        finally:
            cluster.shutdown()
