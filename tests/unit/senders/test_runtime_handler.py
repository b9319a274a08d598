"""Delivery semantics of the handler with a fake provider, ledger and producer."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from schemas.events import now_ms
from senders.handler import DeliveryHandler
from senders.ledger import LedgerRow, State
from senders.outputs import retry_tier
from senders.providers.base import RetriableError
from senders.settings import BreakerSettings, RetrySettings, RoutingSettings, SenderSettings
from tests.unit.senders.fakes import (
    FakeProvider,
    MemoryLedger,
    MemoryPublisher,
    delivery,
    permanent,
    retriable,
)


def settings(**over: Any) -> SenderSettings:
    base: dict[str, Any] = {
        "retry": RetrySettings(delays_s=[1.0, 2.0], claim_stale_after_s=0.5),
        "breaker": BreakerSettings(failure_threshold=3, open_for_s=60),
        "metrics_enabled": False,
    }
    base.update(over)
    return SenderSettings(**base)


class World:
    def __init__(self, **over: Any) -> None:
        self.ledger = MemoryLedger()
        self.out = MemoryPublisher()
        self.twilio = FakeProvider("twilio", ["sms"])
        self.vonage = FakeProvider("vonage", ["sms"])
        self.smtp = FakeProvider("smtp", ["email"])
        self.sendgrid = FakeProvider("sendgrid", ["email"])
        self.apns = FakeProvider("apns", ["push.ios"])
        self.handler = self.make_handler("me", **over)

    def make_handler(self, owner: str, **over: Any) -> DeliveryHandler:
        providers = {
            p.name: p for p in (self.twilio, self.vonage, self.smtp, self.sendgrid, self.apns)
        }
        return DeliveryHandler(
            settings=settings(**over),
            ledger=self.ledger,
            publisher=self.out,
            providers=providers,
            owner=owner,
        )

    async def handle(
        self, d: dict[str, Any], topic: str = "notifications.sms", *, redriven: bool = False
    ) -> str:
        return await self.handler.handle(d, topic, partition=0, redriven=redriven)


async def test_sent_once_and_recorded() -> None:
    w = World()
    assert await w.handle(delivery()) == State.SENT
    row = w.ledger.rows["d-1"]
    assert (row.state, row.provider, row.provider_message_id) == ("sent", "twilio", "twilio-1")
    assert row.published
    assert w.out.outcomes() == ["sent"]
    status = w.out.on("notifications.status")[0]
    assert status.key == b"n-1"
    assert status.decoded()["provider_message_id"] == "twilio-1"
    assert w.ledger.logs == [("d-1", "sent")]


async def test_redelivered_record_is_not_sent_again() -> None:
    w = World()
    d = delivery()
    await w.handle(d)
    assert await w.handle(d) == "duplicate"
    assert w.twilio.calls == 1
    assert w.out.outcomes() == ["sent"]


async def test_concurrent_duplicates_make_one_provider_call() -> None:
    w = World()
    w.twilio.gate = asyncio.Event()
    first = asyncio.create_task(w.handle(delivery()))
    second = asyncio.create_task(w.handle(delivery()))
    await asyncio.sleep(0.01)
    w.twilio.gate.set()
    assert sorted(await asyncio.gather(first, second)) == ["duplicate", "sent"]
    assert w.twilio.calls == 1


async def test_another_processes_duplicate_waits_for_its_outcome() -> None:
    w = World()
    other = w.make_handler("other")
    w.twilio.gate = asyncio.Event()
    first = asyncio.create_task(other.handle(delivery(), "notifications.sms", partition=0))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(w.handle(delivery()))
    await asyncio.sleep(0.1)
    assert not second.done()  # fresh claim of a live owner: wait, do not send
    w.twilio.gate.set()
    assert await first == "sent"
    assert await second == "duplicate"
    assert w.twilio.calls == 1


async def test_definite_failure_of_primary_fails_over_once() -> None:
    w = World()
    w.twilio.steps = [retriable("twilio:503", status=503)]
    assert await w.handle(delivery()) == State.SENT
    assert (w.twilio.calls, w.vonage.calls) == (1, 1)
    assert w.ledger.rows["d-1"].provider == "vonage"


async def test_ambiguous_sms_is_dead_lettered_not_failed_over() -> None:
    w = World()
    w.twilio.steps = [TimeoutError()]
    assert await w.handle(delivery()) == State.DEAD_LETTERED
    assert w.vonage.calls == 0
    [dlq] = w.out.on("notifications.sms.dlq")
    assert dlq.headers["herald.reason"] == b"uncertain_timeout"


async def test_ambiguous_push_is_dead_lettered_by_default() -> None:
    w = World()
    w.apns.steps = [TimeoutError()]
    d = delivery(channel="push.ios", device_id="dev-1", address="tok")
    assert await w.handle(d, "notifications.push.ios") == State.DEAD_LETTERED
    assert w.ledger.rows["d-1"].reason == "uncertain_timeout"
    assert w.apns.calls == 1


async def test_ambiguous_email_retries_on_the_same_provider_only_when_allowed() -> None:
    routing = RoutingSettings.model_validate({"email": {"retry_ambiguous": True}})
    w = World(routing=routing)
    read_timeout = RetriableError("smtp:timeout", provider="smtp")
    read_timeout.__cause__ = httpx.ReadTimeout("no answer")
    w.smtp.steps = [read_timeout]
    d = delivery(channel="email", address="a@example.com")
    assert await w.handle(d, "notifications.email") == State.RETRYING
    assert w.sendgrid.calls == 0
    [retry] = w.out.on("notifications.email.retry.1")
    again = retry.decoded()
    assert again["attempt"] == 2
    # Next attempt: the primary is down for sure now, yet the fallback must not be used.
    w.smtp.steps = [retriable("smtp:421", status=421)]
    assert await w.handle(again, retry.topic) == State.RETRYING
    assert w.sendgrid.calls == 0
    assert w.ledger.rows["d-1"].pinned_provider == "smtp"


async def test_retriable_goes_to_the_next_tier_with_retry_after() -> None:
    w = World()
    w.twilio.steps = [retriable("twilio:429", status=429, retry_after=30)]
    w.vonage.steps = [retriable("vonage:503", status=503)]
    before = now_ms()
    assert await w.handle(delivery()) == State.RETRYING
    # Retry-After 30 s is longer than tier 1's delay: the record goes to tier 2, so it does
    # not hold back the records behind it in tier 1.
    [retry] = w.out.on("notifications.sms.retry.2")
    rec = retry.decoded()
    assert rec["attempt"] == 2 and rec["last_error"] == "vonage:503"
    not_before = rec["not_before"]
    not_before_ms = (
        int(not_before.timestamp() * 1000) if isinstance(not_before, datetime) else not_before
    )
    assert not_before_ms >= before + 30_000  # Retry-After beats the 1 s tier delay
    assert retry.key == b"u-1"
    assert w.out.outcomes() == ["retried"]
    assert w.out.on("notifications.status")[0].decoded()["attempt"] == 2
    row = w.ledger.rows["d-1"]
    assert (row.state, row.attempt, row.first_error) == ("retrying", 1, "twilio:429")

    # The retry record itself: claimed for attempt 2 and sent.
    assert await w.handle(rec, retry.topic) == State.SENT
    assert w.ledger.rows["d-1"].attempt == 2
    # The original record once more: its attempt is over, nothing happens.
    assert await w.handle(delivery()) == "duplicate"
    assert w.twilio.calls + w.vonage.calls == 3


async def test_exhausted_retries_dead_letter_with_headers() -> None:
    w = World()
    w.twilio.steps = [retriable()] * 10
    w.vonage.steps = [retriable("vonage:500", status=500)] * 10
    d = delivery(attempt=3)  # the last tier (2 delays configured) has been used
    w.ledger.rows["d-1"] = LedgerRow(State.RETRYING, 2, first_error="twilio:503")
    assert await w.handle(d, "notifications.sms.retry.2") == State.DEAD_LETTERED
    [dlq] = w.out.on("notifications.sms.dlq")
    h = dlq.headers
    assert h["herald.reason"] == b"retries_exhausted"
    assert h["herald.attempts"] == b"3"
    assert h["herald.first_error"] == b"twilio:503"
    assert h["herald.last_error"] == b"vonage:500"
    assert h["herald.original_topic"] == b"notifications.sms"
    assert int(h["herald.failed_at"]) > 0
    assert w.out.outcomes() == ["dead_lettered"]


async def test_permanent_error_fails_without_retry_or_fallback() -> None:
    w = World()
    w.twilio.steps = [permanent("twilio:21211 invalid number", invalid_address=True)]
    assert await w.handle(delivery()) == State.FAILED
    assert w.vonage.calls == 0
    assert w.out.outcomes() == ["failed"]
    assert not w.out.on("notifications.sms.dlq")


async def test_unregistered_token_deletes_the_device() -> None:
    w = World()
    w.ledger.devices[("u-1", "dev-1")] = "tok"
    w.apns.steps = [permanent("apns:410 Unregistered", invalid_address=True)]
    d = delivery(channel="push.ios", device_id="dev-1", address="tok")
    assert await w.handle(d, "notifications.push.ios") == State.FAILED
    assert ("u-1", "dev-1") not in w.ledger.devices
    assert w.out.outcomes() == ["failed", "token_invalidated"]


async def test_a_reregistered_device_is_not_deleted() -> None:
    w = World()
    w.ledger.devices[("u-1", "dev-1")] = "new-token"
    w.apns.steps = [permanent("apns:410 Unregistered", invalid_address=True)]
    d = delivery(channel="push.ios", device_id="dev-1", address="old-token")
    await w.handle(d, "notifications.push.ios")
    assert w.ledger.devices[("u-1", "dev-1")] == "new-token"


async def test_expired_delivery_is_dropped_without_a_call() -> None:
    w = World()
    d = delivery(expires_at=now_ms() - 1)
    assert await w.handle(d) == State.DROPPED
    assert w.twilio.calls == 0
    [event] = w.out.on("notifications.status")
    assert (event.decoded()["outcome"], event.decoded()["reason"]) == ("dropped", "expired")


async def test_retry_past_expiry_is_dropped_now() -> None:
    w = World()
    w.twilio.steps = [retriable()]
    w.vonage.steps = [retriable("vonage:503")]
    assert await w.handle(delivery(expires_at=now_ms() + 200)) == State.DROPPED


async def test_stale_claim_of_a_dead_sender_is_dead_lettered_not_resent() -> None:
    w = World()
    old = datetime.now(UTC) - timedelta(seconds=5)
    w.ledger.rows["d-1"] = LedgerRow(
        State.SENDING, 1, owner="dead", provider="twilio", updated_at=old
    )
    assert await w.handle(delivery()) == State.DEAD_LETTERED
    assert w.twilio.calls == 0 and w.vonage.calls == 0
    [dlq] = w.out.on("notifications.sms.dlq")
    assert dlq.headers["herald.reason"] == b"uncertain_after_crash"


async def test_unpublished_outcome_is_published_by_the_redelivered_record() -> None:
    w = World()
    w.ledger.rows["d-1"] = LedgerRow(
        State.SENT, 1, owner="dead", provider="twilio", provider_message_id="SM1", published=False
    )
    assert await w.handle(delivery()) == "duplicate"
    assert w.twilio.calls == 0
    assert w.out.outcomes() == ["sent"]
    assert w.ledger.rows["d-1"].published
    # Published now: a further copy publishes nothing.
    await w.handle(delivery())
    assert w.out.outcomes() == ["sent"]


async def test_unpublished_retry_is_produced_again() -> None:
    w = World()
    w.ledger.rows["d-1"] = LedgerRow(State.RETRYING, 1, last_error="twilio:503")
    assert await w.handle(delivery()) == "duplicate"
    assert len(w.out.on("notifications.sms.retry.1")) == 1


async def test_open_breaker_skips_the_primary() -> None:
    w = World()
    w.twilio.steps = [retriable()] * 3
    for i in range(3):
        await w.handle(delivery(delivery_id=f"d-{i}"))
    assert w.twilio.calls == 3 and w.vonage.calls == 3
    await w.handle(delivery(delivery_id="d-9"))
    assert w.twilio.calls == 3  # circuit open: straight to the fallback
    assert w.vonage.calls == 4


async def test_all_circuits_open_schedules_a_retry_without_calls() -> None:
    w = World()
    w.apns.steps = [retriable("apns:503")] * 3
    for i in range(3):
        await w.handle(delivery(delivery_id=f"d-{i}", channel="push.ios"), "notifications.push.ios")
    assert await w.handle(delivery(delivery_id="d-9", channel="push.ios")) == State.RETRYING
    assert w.apns.calls == 3
    assert w.ledger.rows["d-9"].last_error == "apns:circuit_open"


async def test_cassandra_down_before_the_call_raises_and_a_second_try_works() -> None:
    w = World()
    w.ledger.fail_next = 1
    with pytest.raises(ConnectionError):
        await w.handle(delivery())
    assert await w.handle(delivery()) == State.SENT
    assert w.twilio.calls == 1


async def test_cassandra_down_after_the_call_waits_instead_of_resending() -> None:
    w = World()
    orig = w.ledger.finish
    fails = {"n": 2}

    async def flaky(*a: Any) -> bool:
        if fails["n"]:
            fails["n"] -= 1
            raise ConnectionError("down")
        return await orig(*a)

    w.ledger.finish = flaky  # type: ignore[method-assign,assignment]
    assert await w.handle(delivery()) == State.SENT
    assert w.twilio.calls == 1


@pytest.mark.parametrize(
    ("error", "fails", "raised"),
    [(ConnectionError("down"), 8, False), (ValueError("poison value"), 8, True)],
    ids=["outage-waited-out", "bug-given-up"],
)
async def test_a_failing_step_after_the_call_waits_out_an_outage_and_gives_up_on_a_bug(
    error: Exception, fails: int, raised: bool
) -> None:
    w = World()
    w.handler._sleep = lambda _: asyncio.sleep(0)  # type: ignore[method-assign]
    orig = w.ledger.published
    calls = {"n": 0}

    async def failing(*a: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= fails:
            raise error
        await orig(*a)

    w.ledger.published = failing  # type: ignore[method-assign]
    async with asyncio.timeout(5):
        if raised:
            with pytest.raises(ValueError):
                await w.handle(delivery())
        else:
            assert await w.handle(delivery()) == State.SENT
    assert calls["n"] == (5 if raised else fails + 1)
    assert w.twilio.calls == 1


async def test_only_a_redrive_brings_a_dead_letter_back() -> None:
    w = World()
    w.ledger.rows["d-1"] = LedgerRow(
        State.DEAD_LETTERED, 3, reason="retries_exhausted", published=True
    )
    assert await w.handle(delivery()) == "duplicate"  # a replay or a stray copy
    assert w.twilio.calls == 0
    redriven = delivery(attempt=1)
    assert await w.handle(redriven, redriven=True) == State.SENT
    assert w.twilio.calls == 1
    # A second copy of the redrive finds it sent.
    assert await w.handle(redriven, redriven=True) == "duplicate"
    assert w.twilio.calls == 1


async def test_redrive_never_resends_a_sent_delivery() -> None:
    w = World()
    w.ledger.rows["d-1"] = LedgerRow(State.SENT, 1, published=True)
    assert await w.handle(delivery(), redriven=True) == "duplicate"
    assert w.twilio.calls == 0


async def test_pinned_provider_no_longer_configured_is_not_a_crash() -> None:
    w = World()
    w.ledger.rows["d-1"] = LedgerRow(State.RETRYING, 1, pinned_provider="gone")
    assert await w.handle(delivery(attempt=2)) == State.RETRYING
    assert w.twilio.calls == w.vonage.calls == 0
    assert w.ledger.rows["d-1"].last_error == "gone:not_configured"


async def test_failover_survives_a_ledger_hiccup() -> None:
    w = World()
    w.twilio.steps = [retriable("twilio:503")]
    orig = w.ledger.set_provider
    fails = {"n": 1}

    async def flaky(*a: Any) -> bool:
        if fails["n"]:
            fails["n"] -= 1
            raise ConnectionError("down")
        return await orig(*a)

    w.ledger.set_provider = flaky  # type: ignore[method-assign,assignment]
    assert await w.handle(delivery()) == State.SENT
    assert (w.twilio.calls, w.vonage.calls) == (1, 1)


def test_retry_tier_covers_retry_after() -> None:
    delays = [5.0, 30.0, 120.0]
    assert retry_tier(delays, 1, 0) == 1
    assert retry_tier(delays, 1, 5) == 1
    assert retry_tier(delays, 1, 6) == 2
    assert retry_tier(delays, 1, 100) == 3
    assert retry_tier(delays, 2, 1) == 2
    assert retry_tier(delays, 1, 3600) == 3  # the last tier, not past it


async def test_a_timed_out_but_applied_outcome_write_is_recognised() -> None:
    w = World()
    orig = w.ledger.finish
    calls = {"n": 0}

    async def applied_then_timeout(*a: Any) -> bool:
        calls["n"] += 1
        result = await orig(*a)
        if calls["n"] == 1:
            raise TimeoutError("cas write timeout")  # applied, but we never heard
        return result

    w.ledger.finish = applied_then_timeout  # type: ignore[method-assign,assignment]
    assert await w.handle(delivery()) == State.SENT
    assert w.out.outcomes() == ["sent"]
    assert w.ledger.rows["d-1"].published


async def test_a_stalled_owner_that_did_send_corrects_the_uncertain_verdict() -> None:
    w = World()
    other = w.make_handler("other")
    w.twilio.gate = asyncio.Event()
    sending = asyncio.create_task(w.handle(delivery()))
    await asyncio.sleep(0.01)
    # Meanwhile another sender finds the claim stale and dead-letters it as uncertain.
    stale = dataclasses.replace(
        w.ledger.rows["d-1"], updated_at=datetime.now(UTC) - timedelta(seconds=5)
    )
    w.ledger.rows["d-1"] = stale
    assert await other.handle(delivery(), "notifications.sms", partition=0) == State.DEAD_LETTERED
    w.twilio.gate.set()  # the stalled owner's send completes after all
    assert await sending == State.SENT
    assert w.ledger.rows["d-1"].state == State.SENT
    assert w.out.outcomes() == ["dead_lettered", "sent"]
    # An operator's redrive of that dead letter now finds it sent.
    redrive = w.make_handler("ops")
    assert await redrive.handle(delivery(), "x", partition=0, redriven=True) == "duplicate"
    assert w.twilio.calls == 1


async def test_a_delivery_waiting_for_room_at_the_provider_holds_no_claim() -> None:
    # Twilio's client can have one send in progress (`Provider.concurrency`): the second
    # delivery waits for that room before claiming, so a crash now would leave one
    # delivery uncertain, not two.
    w = World()
    w.twilio.concurrency = 1
    w.handler = w.make_handler("me")
    w.twilio.gate = asyncio.Event()
    first = asyncio.create_task(w.handle(delivery()))
    second = asyncio.create_task(w.handle(delivery(delivery_id="d-2")))
    await asyncio.sleep(0.05)
    assert w.twilio.calls == 1
    assert w.ledger.rows["d-1"].state == State.SENDING
    assert "d-2" not in w.ledger.rows
    w.twilio.gate.set()
    assert await asyncio.gather(first, second) == ["sent", "sent"]
    assert w.twilio.calls == 2


async def test_failover_gives_back_the_first_providers_room() -> None:
    w = World()
    w.twilio.concurrency = 1
    w.vonage.concurrency = 1
    w.handler = w.make_handler("me")
    w.twilio.steps = [retriable("twilio:503", status=503)]
    assert await w.handle(delivery()) == State.SENT  # failed over to vonage
    assert (w.twilio.calls, w.vonage.calls) == (1, 1)
    # Neither room is still held: the next delivery goes straight to twilio.
    async with asyncio.timeout(1):
        assert await w.handle(delivery(delivery_id="d-2")) == State.SENT
    assert w.twilio.calls == 2
