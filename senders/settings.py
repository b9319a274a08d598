"""Settings of the sender service: one class, read from `HERALD_*` at the entry point only."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from infra.settings import ServiceSettings
from infra.topics import RETRY_TIERS
from schemas.channels import Channel
from senders.providers.settings import ProvidersSettings


class Route(BaseModel):
    """Providers of one channel, in failover order (first = primary)."""

    providers: list[str]
    # After an ambiguous failure (request sent, no answer, maybe accepted) herald by default
    # dead-letters the delivery (`uncertain_timeout`) rather than risk a double send. Set
    # true to retry on the same provider instead, where a duplicate is tolerable: push
    # collapses on the device by collapse id, mail clients by the repeated Message-ID.
    retry_ambiguous: bool = False

    @field_validator("providers")
    @classmethod
    def _not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a route needs at least one provider")
        return v


_DEFAULT_ROUTES: dict[str, dict[str, Any]] = {
    "push_ios": {"providers": ["apns"]},
    "push_android": {"providers": ["fcm"]},
    "push_web": {"providers": ["fcm"]},
    "sms": {"providers": ["twilio", "vonage"]},
    "email": {"providers": ["smtp", "sendgrid"]},
    # Writing a feed row twice rewrites the same row: an ambiguous failure is retried.
    "inapp": {"providers": ["inapp"], "retry_ambiguous": True},
}


class RoutingSettings(BaseModel):
    push_ios: Route
    push_android: Route
    push_web: Route
    sms: Route
    email: Route
    inapp: Route

    @model_validator(mode="before")
    @classmethod
    def _defaults_under_overrides(cls, data: Any) -> Any:
        # One env var (e.g. HERALD_ROUTING__SMS__PROVIDERS) must not wipe the rest of the
        # channel's route or the other channels.
        data = dict(data or {})
        for name, default in _DEFAULT_ROUTES.items():
            given = data.get(name)
            if given is None:
                data[name] = default
            elif isinstance(given, dict):
                data[name] = {**default, **given}
        return data

    def route(self, channel: Channel | str) -> Route:
        route: Route = getattr(self, str(channel).replace(".", "_"))
        return route


class RetrySettings(BaseModel):
    # Delay of each retry tier (topic notifications.<channel>.retry.<n>); the number of
    # entries is the number of retries, so attempts = 1 + len(delays_s).
    delays_s: list[float] = Field(default_factory=lambda: [5.0, 30.0, 120.0])
    # A `sending` claim older than this belongs to a dead sender (must exceed send_timeout_s).
    claim_stale_after_s: float = 60.0

    @field_validator("delays_s")
    @classmethod
    def _tiers(cls, v: list[float]) -> list[float]:
        if len(v) > RETRY_TIERS:
            raise ValueError(f"at most {RETRY_TIERS} retry tiers exist, got {len(v)} delays")
        if any(d < 0 for d in v):
            raise ValueError("retry delays must be >= 0")
        return v


class BreakerSettings(BaseModel):
    failure_threshold: int = 5  # consecutive failures that open the circuit
    open_for_s: float = 30.0  # how long it stays open before a probe
    half_open_probes: int = 1  # concurrent probe sends allowed while half-open


_DEFAULT_RATES = {
    "apns": 2000.0,
    "fcm": 1000.0,
    "webpush": 500.0,
    "twilio": 100.0,
    "vonage": 30.0,
    "smtp": 200.0,
    "sendgrid": 100.0,
    "inapp": 2000.0,
}


class RateLimitSettings(BaseModel):
    """Token bucket per provider: sends per second, keep under the provider's quota."""

    # Merged over the defaults: setting one provider's rate keeps the others'.
    per_second: dict[str, float] = Field(default_factory=lambda: dict(_DEFAULT_RATES))
    default_per_second: float = Field(default=100.0, gt=0)
    burst_s: float = 1.0  # bucket capacity, in seconds of rate

    @field_validator("per_second")
    @classmethod
    def _over_defaults(cls, v: dict[str, float]) -> dict[str, float]:
        if any(rate <= 0 for rate in v.values()):
            raise ValueError("a provider's rate must be > 0 (sends per second)")
        return {**_DEFAULT_RATES, **v}

    def rate(self, provider: str) -> float:
        return self.per_second.get(provider, self.default_per_second)


class SenderSettings(ServiceSettings):
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    routing: RoutingSettings = Field(default_factory=lambda: RoutingSettings.model_validate({}))
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()

    group_prefix: str = "herald-sender"  # consumer group = <prefix>-<channel>
    # Where a new consumer group starts: `latest` skips the backlog of a fresh group.
    start_at: Literal["earliest", "latest"] = "earliest"
    # How fast the group notices a dead sender and hands its partitions to the others.
    session_timeout_ms: int = 10000
    # Deliveries in flight per process, over all channels: also the largest batch a lane
    # fetches, and so the most a SIGKILL can leave `uncertain_after_crash` (make
    # bench-crash: 39 at 512, 153 at 1,024). A delivery is in flight for its provider call
    # and three ledger round trips, so throughput is in-flight ÷ latency until the process
    # runs out of CPU: on the 2-core bench box 512 gave 370-384 deliveries/s, 1,024 gave
    # 455, 2,048 gave 520 (docs/benchmarks.md). More is a trade, not a free win.
    max_in_flight: int = 512
    # In-flight limit reached for longer than this: pause the partitions (backpressure to
    # Kafka); shorter: just stop fetching and keep librdkafka's prefetched records.
    pause_after_s: float = 1.0
    prefetch_kbytes: int = 4096  # per consumer
    send_timeout_s: float = 30.0  # a send with no answer by then is ambiguous
    # How long a conditional ledger write may wait for others to share its Paxos round
    # (senders/ledger.py): fewer rounds cost Cassandra less CPU when deliveries trickle in.
    # A claim's wait delays its provider call; a finish's holds its in-flight slot and
    # widens what a SIGKILL leaves `uncertain_after_crash`. Off by default (docs/senders.md).
    ledger_claim_linger_ms: float = Field(default=0.0, ge=0, le=1000)
    ledger_linger_ms: float = Field(default=0.0, ge=0, le=1000)
    shutdown_grace_s: float = 30.0  # SIGTERM: time given to in-flight sends
    metrics_port: int = 9402
    metrics_enabled: bool = True
    # Written into every claim; a fresh one per process so claims of a dead one are told apart.
    instance_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])

    def group_id(self, channel: Channel | str) -> str:
        return f"{self.group_prefix}-{channel}"
