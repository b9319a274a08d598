"""docs/providers.md tells an operator pointing herald at real providers what still points
at the laptop: each claim is checked against the settings it describes."""

from __future__ import annotations

from pathlib import Path

from processors.settings import ProcessorSettings
from processors.tracking import TrackingSettings
from senders.settings import SenderSettings

DOC = (Path(__file__).resolve().parents[3] / "docs" / "providers.md").read_text()


def test_fallback_providers_keep_emulator_defaults_unless_routed() -> None:
    settings = SenderSettings()
    for channel, fallback in (("sms", "vonage"), ("email", "sendgrid")):
        assert fallback in settings.routing.route(channel).providers
        assert "127.0.0.1" in getattr(settings.providers, fallback).url
        assert f"HERALD_ROUTING__{channel.upper()}__PROVIDERS" in DOC
    assert "fallback" in DOC and "emulator defaults" in DOC


def test_the_tracking_base_url_default_is_documented() -> None:
    assert TrackingSettings().base_url.startswith("http://127.0.0.1")
    assert "HERALD_TRACKING__BASE_URL" in DOC and TrackingSettings().base_url in DOC


def test_each_service_gets_its_own_metrics_port() -> None:
    assert {ProcessorSettings().metrics_port, SenderSettings().metrics_port} == {9401, 9402}
    assert "HERALD_METRICS_PORT" in DOC and "HERALD_STATUS__METRICS_URLS" in DOC
