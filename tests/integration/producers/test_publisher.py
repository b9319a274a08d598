"""The producer library against the real broker: validation first, key = user id, batches."""

from __future__ import annotations

import pytest

from infra import topics
from producers.publisher import AsyncPublisher, Publisher
from producers.request import Content, NotificationRequest
from schemas import codec
from schemas.ids import notification_id
from schemas.validation import ValidationError
from tests.integration.producers.intakekit import KAFKA, read_at, uid

pytestmark = pytest.mark.integration


def _req(**over: object) -> NotificationRequest:
    base: dict[str, object] = {
        "source": "billing",
        "user_id": uid(),
        "category": "transactional",
        "channels": ["email"],
        "content": {"email": Content(subject="Receipt", body="Thanks")},
    }
    base.update(over)
    return NotificationRequest.model_validate(base)


def test_publish_lands_decodable_with_user_id_key() -> None:
    req = _req(params={"amount": "9.99"})
    with Publisher(KAFKA, client="test-intake") as pub:
        result = pub.publish(req)
    assert result.ok and result.topic == topics.REQUESTED
    assert result.notification_id == notification_id(req.event_id)
    msg = read_at(result.topic, result.partition, result.offset)
    assert msg.key() == req.user_id.encode()
    record = codec.decode(msg.value(), expect=codec.REQUEST)
    assert record["event_id"] == req.event_id
    assert record["notification_id"] == result.notification_id
    assert record["content"]["email"]["body"] == "Thanks"
    assert record["params"] == {"amount": "9.99"}


def test_invalid_request_names_the_field_and_produces_nothing() -> None:
    with Publisher(KAFKA, client="test-intake") as pub:
        with pytest.raises(ValidationError) as err:
            pub.publish(_req(content={}, channels=[]))
        assert err.value.field == "template_id"
        with pytest.raises(ValidationError) as err:
            pub.publish_batch([_req(), _req(category="Not A Category")])
        assert err.value.field == "[1].category"
        assert len(pub.producer) == 0


def test_batch_keeps_per_user_order() -> None:
    user = uid()
    reqs = [_req(user_id=user, params={"n": str(i)}) for i in range(20)]
    with Publisher(KAFKA, client="test-intake") as pub:
        results = pub.publish_batch(reqs)
    assert all(r.ok for r in results)
    assert len({r.partition for r in results}) == 1
    offsets = [r.offset for r in results]
    assert offsets == sorted(offsets)


async def test_async_publisher_publishes_and_batches() -> None:
    async with AsyncPublisher(KAFKA, client="test-intake") as pub:
        one = await pub.publish(_req())
        many = await pub.publish_batch([_req() for _ in range(5)])
    assert one.ok and all(r.ok for r in many)
    msg = read_at(many[-1].topic, many[-1].partition, many[-1].offset)
    assert codec.decode(msg.value())["event_id"] == many[-1].event_id
