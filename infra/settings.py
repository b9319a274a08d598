"""Connection settings shared by every herald service.

Each service defines one pydantic-settings class (env prefix `HERALD_`) that nests these
sections; the environment is read only at the service's entry point.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

T = TypeVar("T")

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

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
    # Managed Kafka (Confluent Cloud, MSK, Aiven, ...): SASL and/or TLS, librdkafka's names.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None  # CA bundle; unset = the system's
    ssl_certificate_location: str | None = None  # client certificate (mutual TLS)
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification: bool = True  # check the broker's hostname
    # Of the records herald produces. The broker decompresses every batch to validate it.
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "lz4"
    # How long a producer holds a record to batch it with the next ones (librdkafka's
    # `linger.ms`; Faust's changelog producer too): fewer, larger produce requests. 20 ms,
    # not 5: in two interleaved pairs of `python -m herald.bench` runs, Kafka's CPU per
    # delivery fell (311, 243 -> 184, 236 µs), deliveries/s rose (584, 506 -> 616, 620)
    # and the paced phase's p50 latency fell too (381, 224 -> 247, 185 ms): less queueing.
    linger_ms: int = Field(default=20, ge=0, le=1000)

    def base_config(self, client: str) -> dict[str, str | int | bool]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"{self.client_id_prefix}-{client}",
            **self._security_config(),
        }

    def _security_config(self) -> dict[str, str | int | bool]:
        if self.security_protocol == "PLAINTEXT":
            return {}
        config: dict[str, str | int | bool] = {"security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username or ""
            config["sasl.password"] = _reveal(self.sasl_password)
        if self.security_protocol.endswith("SSL"):
            optional = {
                "ssl.ca.location": self.ssl_ca_location,
                "ssl.certificate.location": self.ssl_certificate_location,
                "ssl.key.location": self.ssl_key_location,
                "ssl.key.password": _reveal(self.ssl_key_password) or None,
            }
            config.update({k: v for k, v in optional.items() if v})
            if not self.ssl_endpoint_identification:
                config["ssl.endpoint.identification.algorithm"] = "none"
        return config

    def faust_credentials(self) -> CredentialsT | None:
        """The same settings for the processor's Faust/aiokafka consumer and producer."""
        if self.security_protocol == "PLAINTEXT":
            return None
        # Imported here: only the processor uses Faust, and importing it costs the others.
        from faust.auth import SASLCredentials, SSLCredentials

        context = self._ssl_context() if self.security_protocol.endswith("SSL") else None
        if self.security_protocol == "SSL":
            return SSLCredentials(context)
        return SASLCredentials(
            username=self.sasl_username,
            password=_reveal(self.sasl_password),
            ssl_context=context,
            mechanism=self.sasl_mechanism,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ssl_ca_location)
        if self.ssl_certificate_location:
            context.load_cert_chain(
                self.ssl_certificate_location,
                self.ssl_key_location,
                _reveal(self.ssl_key_password) or None,
            )
        context.check_hostname = self.ssl_endpoint_identification
        return context

    def producer_config(self, client: str) -> dict[str, str | int | bool]:
        # Idempotence needs acks=all and at most 5 in-flight requests per connection.
        return {
            **self.base_config(client),
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": self.linger_ms,
            "compression.type": self.compression,
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


def _reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


class CassandraSettings(BaseModel):
    hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    port: int = 9042
    keyspace: str = "herald"
    username: str | None = None
    password: SecretStr | None = None
    local_dc: str = "datacenter1"
    request_timeout_s: float = 10.0
    # Native protocol 4, not 5: v5 wraps every frame in checksummed segments that the
    # Python driver builds and checks in Python, on the caller's thread (about 3% of a
    # sender's event loop in a py-spy profile); TCP's own checksums remain.
    protocol_version: int = Field(default=4, ge=4, le=5)


class ServiceSettings(BaseSettings):
    """The base of every service's settings: read from `HERALD_*` variables, nested sections
    joined by `__` (`HERALD_KAFKA__BOOTSTRAP_SERVERS`). Variables another service uses are
    ignored, so one environment can serve them all."""

    model_config = SettingsConfigDict(
        env_prefix="HERALD_", env_nested_delimiter="__", extra="ignore"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    cassandra: CassandraSettings = Field(default_factory=CassandraSettings)
    # Prepended to every topic name (HERALD_TOPIC_PREFIX): an isolated topic family on a
    # shared cluster (a test run, a benchmark, a staging tenant). Empty in production.
    topic_prefix: str = ""
    log_level: str = "INFO"
    profile: str = ""  # HERALD_PROFILE; "dev" allows the published default secrets
    # How long a thread may hold the GIL while another wants it (CPython's default: 5 ms).
    # A service's event loop gives the GIL up at every socket call, and its helper threads
    # (librdkafka's delivery reports, the Cassandra driver's I/O loop, the consumer calls)
    # take it meanwhile; with 5 ms the loop could wait that long to get it back. 0.5 ms:
    # in two interleaved pairs of `make bench` runs, 9-27% more deliveries/s (emulators)
    # and 44-50% more (null provider), and fewer CPU µs per delivery, not more.
    gil_switch_interval_s: float = Field(default=0.0005, gt=0, le=0.1)
    # The services' event loop (HERALD_EVENT_LOOP). uvloop runs asyncio's own machinery
    # (callbacks, timers, transports) in C, and the senders spend a good part of their CPU
    # there: in three interleaved pairs of `python -m herald.bench` runs, the senders used
    # 1,463 µs of CPU per delivery on average without it, 1,240 with it. `asyncio` is the
    # standard library's.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Net allocations between two collections of the cyclic GC's youngest generation
    # (CPython: 700). Deciding a request allocates hundreds of objects, so at 700 the
    # collector ran every few requests and, as the caches grew, walked them again and
    # again: `python -m herald.bench.processor`, two interleaved pairs, processor CPU per
    # request cold 777, 860 µs at 700 against 669, 572 at 20,000 (warm 446, 534 against
    # 443, 412). Garbage in cycles lives a little longer; memory did not measurably move.
    gc_threshold: int = Field(default=20_000, ge=100)

    def tune_interpreter(self) -> None:
        """Process-wide interpreter settings: the processor and the senders call it at start."""
        sys.setswitchinterval(self.gil_switch_interval_s)
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(self.gc_threshold, older, oldest)

    def install_event_loop(self) -> str:
        """For a framework that creates its own loop (Faust): the policy it will get its
        loop from. Returns the name Faust's `--loop` option takes for it."""
        if self.event_loop == "uvloop":
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
        asyncio.set_event_loop_policy(None)  # the standard library's
        return "aio"

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """`asyncio.run(main)` on the configured event loop."""
        if self.event_loop == "uvloop":
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
        return asyncio.run(main)
