"""Connection settings shared by every herald service.

Each service defines one pydantic-settings class (env prefix `HERALD_`) that nests these
sections; the environment is read only at the service's entry point.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

# HERALD_PROFILE=dev: a local stack, where the secrets published in herald's source may be
# used. Any other profile (none by default) refuses them: see `refuse_published_secrets`.
DEV_PROFILE = "dev"


def refuse_published_secrets(profile: str, published: list[str]) -> None:
    """Stop a service before it starts when a secret it uses still holds the value published
    in herald's source (anyone could forge what it signs or keys), unless the dev profile is
    set explicitly. `published` names the variables to set."""
    if published and profile != DEV_PROFILE:
        raise SystemExit(
            f"refusing to start: {', '.join(published)} still hold(s) the default published in"
            f" herald's source; set them, or HERALD_PROFILE={DEV_PROFILE} on a local stack"
        )


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    # Set to use the Confluent schema-registry wire format instead of single-object encoding.
    schema_registry_url: str | None = None
    client_id_prefix: str = "herald"

    def base_config(self, client: str) -> dict[str, str | int | bool]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"{self.client_id_prefix}-{client}",
        }

    def producer_config(self, client: str) -> dict[str, str | int | bool]:
        # Idempotence needs acks=all and at most 5 in-flight requests per connection.
        return {
            **self.base_config(client),
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 5,
            "compression.type": "lz4",
        }

    def consumer_config(self, client: str, group_id: str) -> dict[str, str | int | bool]:
        # Offsets are stored by hand once an outcome is durable, then auto-committed.
        return {
            **self.base_config(client),
            "group.id": group_id,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }


class CassandraSettings(BaseModel):
    hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    port: int = 9042
    keyspace: str = "herald"
    username: str | None = None
    password: SecretStr | None = None
    local_dc: str = "datacenter1"
    request_timeout_s: float = 10.0
