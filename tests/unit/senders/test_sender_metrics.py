"""The cached metric children are the registry's own: counts land where Prometheus reads."""

from __future__ import annotations

from prometheus_client import REGISTRY

from senders import metrics


def test_cached_children_count_in_the_registry() -> None:
    labels = {"channel": "email", "provider": "metrics-test", "outcome": "sent"}
    before = REGISTRY.get_sample_value("herald_deliveries_total", labels) or 0.0
    metrics.delivered("email", "metrics-test", "sent").inc()
    metrics.delivered("email", "metrics-test", "sent").inc()
    assert REGISTRY.get_sample_value("herald_deliveries_total", labels) == before + 2
    assert metrics.delivered("email", "metrics-test", "sent") is metrics.DELIVERIES.labels(
        "email", "metrics-test", "sent"
    )
    metrics.provider_latency("metrics-test", "ok").observe(0.01)
    count = REGISTRY.get_sample_value(
        "herald_provider_latency_seconds_count", {"provider": "metrics-test", "result": "ok"}
    )
    assert count == 1
