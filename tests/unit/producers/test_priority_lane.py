"""Urgent requests take the request priority lane; the rest the main request topic."""

from typing import Any

import pytest

from infra import topics
from producers.publisher import Publisher
from producers.request import Content, NotificationRequest


class _NoProducer:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError("prepare must not touch Kafka")


def _req(**kw: Any) -> NotificationRequest:
    return NotificationRequest(
        source="t",
        user_id="u1",
        content={"sms": Content(body="hi")},
        **{"category": "marketing", **kw},
    )


@pytest.mark.parametrize(
    ("kw", "lane"),
    [
        ({}, topics.REQUESTED),
        ({"priority": "low"}, topics.REQUESTED),
        ({"priority": "high"}, topics.REQUESTED_PRIORITY),
        ({"category": "security"}, topics.REQUESTED_PRIORITY),
    ],
)
def test_lane_follows_priority_and_mandatory_category(kw: dict[str, str], lane: str) -> None:
    pub = Publisher(producer=_NoProducer())  # type: ignore[arg-type]
    assert pub.prepare(_req(**kw)).topic == lane


def test_prefixed_family_keeps_its_own_lane() -> None:
    pub = Publisher(topic="run1." + topics.REQUESTED, producer=_NoProducer())  # type: ignore[arg-type]
    assert pub.prepare(_req(priority="high")).topic == "run1." + topics.REQUESTED_PRIORITY


def test_lane_can_be_turned_off() -> None:
    pub = Publisher(priority_lane=False, producer=_NoProducer())  # type: ignore[arg-type]
    assert pub.prepare(_req(priority="high")).topic == topics.REQUESTED
