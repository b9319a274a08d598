from __future__ import annotations

import pytest
from pydantic import ValidationError

from senders.settings import SenderSettings


def test_defaults_route_each_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    s = SenderSettings()
    assert s.routing.route("push.ios").providers == ["apns"]
    assert s.routing.route("push.web").providers == ["fcm"]
    assert s.routing.route("sms").providers == ["twilio", "vonage"]
    assert not any(s.routing.route(c).retry_ambiguous for c in ("sms", "email", "push.ios"))
    assert s.routing.route("email").providers == ["smtp", "sendgrid"]
    assert s.metrics_port == 9402
    assert s.group_id("sms") == "herald-sender-sms"


def test_one_env_override_keeps_the_other_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_ROUTING__SMS__PROVIDERS", '["vonage"]')
    monkeypatch.setenv("HERALD_ROUTING__EMAIL__RETRY_AMBIGUOUS", "true")
    monkeypatch.setenv("HERALD_RATE_LIMITS__PER_SECOND", '{"twilio": 5}')
    monkeypatch.setenv("HERALD_RETRY__DELAYS_S", "[0.1, 0.2]")
    s = SenderSettings()
    assert s.routing.sms.providers == ["vonage"] and not s.routing.sms.retry_ambiguous
    assert s.routing.email.providers == ["smtp", "sendgrid"]
    assert s.routing.email.retry_ambiguous
    assert s.routing.push_ios.providers == ["apns"]
    assert s.rate_limits.rate("twilio") == 5 and s.rate_limits.rate("apns") == 2000
    assert s.retry.delays_s == [0.1, 0.2]


def test_more_tiers_than_topics_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_RETRY__DELAYS_S", "[1, 2, 3, 4]")
    with pytest.raises(ValidationError):
        SenderSettings()


def test_instances_get_distinct_owner_ids() -> None:
    assert SenderSettings().instance_id != SenderSettings().instance_id
