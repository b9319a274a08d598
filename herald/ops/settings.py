"""Settings of the ops tools and services: one class, read once at each entry point."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from infra.settings import ServiceSettings
from processors.tracking import TrackingSettings

LOCAL_APP_KEY = "herald-local-app-key"


class LagSection(BaseModel):
    host: str = "0.0.0.0"
    port: int = 9403
    interval_s: float = 5.0
    # Explicit groups to watch; empty = every group whose name starts with `group_prefix`.
    groups: list[str] = Field(default_factory=list)
    group_prefix: str = "herald-"
    # Short-lived tool groups are not queues anyone drains.
    exclude_prefixes: list[str] = Field(
        default_factory=lambda: ["herald-replay-", "herald-ops-", "herald-bench-", "herald-test-"]
    )


class TrackingServerSection(BaseModel):
    host: str = "0.0.0.0"
    port: int = 9404
    # Keys client apps send as `X-Herald-App-Key` to report push delivered/opened.
    # The default only suits a local stack (refused outside HERALD_PROFILE=dev).
    app_keys: list[SecretStr] = Field(default_factory=lambda: [SecretStr(LOCAL_APP_KEY)])


class StatusSection(BaseModel):
    interval_s: float = 2.0
    # Prometheus endpoints of the processor and the senders, read for error rates.
    metrics_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:9401/metrics", "http://127.0.0.1:9402/metrics"]
    )


class OpsSettings(ServiceSettings):
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    lag: LagSection = Field(default_factory=LagSection)
    tracking_server: TrackingServerSection = Field(default_factory=TrackingServerSection)
    status: StatusSection = Field(default_factory=StatusSection)

    def published_secrets(self) -> list[str]:
        """Variables of the tracking server whose secrets still hold the published default."""
        app_keys = {k.get_secret_value() for k in self.tracking_server.app_keys}
        published = ["HERALD_TRACKING_SERVER__APP_KEYS"] if LOCAL_APP_KEY in app_keys else []
        return self.tracking.published_secrets() + published
