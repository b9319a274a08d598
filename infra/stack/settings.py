"""Where and how the local Kafka and Cassandra run; read from `HERALD_STACK_*`."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_STACK_", extra="ignore")

    # Data, logs, configs and the resolved jars live here; git ignores it.
    run_dir: Path = Path(".run")
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "768m"
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    cassandra_heap: str = "2G"
    java: str = "java"
    maven: str = "mvn"
    # A separate local Maven repository (e.g. for a clean-room check); default ~/.m2.
    maven_repo: Path | None = None
    start_timeout_s: float = 240.0

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    def client_env(self) -> dict[str, str]:
        """The variables herald's services read to find this stack."""
        return {
            "HERALD_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "HERALD_CASSANDRA__HOSTS": f'["{self.host}"]',
            "HERALD_CASSANDRA__PORT": str(self.cassandra_port),
        }
