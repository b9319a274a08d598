"""Apache Kafka 4.x in KRaft mode: one combined broker + controller on the loopback."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from infra.stack.component import Component, StackError

LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class Kafka(Component):
    name = "kafka"

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    def server_properties(self) -> str:
        s = self.settings
        data = self.home / "data"
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{s.host}:{s.kafka_controller_port}",
                f"listeners=PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://{s.host}:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={data}",
                # One broker: internal topics cannot have more than one replica.
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=10",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "num.partitions=3",
                # Topics come from infra/topics.py only; a typo must fail, not create a topic.
                "auto.create.topics.enable=false",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.check.interval.ms=60000",
                "",
            ]
        )

    def prepare(self, lib: Path) -> None:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (self.home / "server.properties").write_text(self.server_properties())
        (self.home / "log4j2.properties").write_text(LOG4J2.format(logs=logs))
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id_file = self.home / "cluster-id"
        if not cluster_id_file.exists():
            # KRaft wants a base64 UUID; a urlsafe 22-char encoding of a random UUID is one.
            import base64

            raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            cluster_id_file.write_text(raw)
        argv = [
            self.settings.java,
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id_file.read_text().strip(),
            "-c",
            str(self.home / "server.properties"),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"kafka storage format failed:\n{done.stdout}\n{done.stderr}")

    def java_args(self, lib: Path) -> list[str]:
        heap = self.settings.kafka_heap
        return [
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp",
            f"{lib}/*",
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]

    def probe(self) -> str:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {
                "bootstrap.servers": self.settings.bootstrap_servers,
                "socket.timeout.ms": 3000,
                "log_level": 0,  # a refused connection while starting is expected
            }
        )
        meta = admin.list_topics(timeout=3)
        if not meta.brokers:
            raise StackError("no broker in metadata")
        return f"{len(meta.brokers)} broker, {len(meta.topics)} topics"
