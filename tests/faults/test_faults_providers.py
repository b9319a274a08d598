"""Providers misbehaving: 500s, 429 with Retry-After, timeouts, very slow answers.

Every request must still end exactly once: delivered (once, by the emulator's ledger) or
dead-lettered / failed with a reason once the retries run out.
"""

from __future__ import annotations

from typing import Any

import pytest

from herald.bench import load
from herald.bench.oracle import Oracle, Verdict
from herald.bench.scenario import RequestFeed, mixed_requests
from herald.bench.services import Pipeline

pytestmark = pytest.mark.faults

PRIMARY = ("apns", "fcm", "twilio", "smtp")
EVERY = (*PRIMARY, "vonage", "sendgrid")
WARM = 8  # clean requests sent before each fault is switched on


def inject(
    pipeline: Pipeline,
    providers: tuple[str, ...],
    *,
    warm: tuple[Oracle, RequestFeed, list[load.User]],
    **fault: Any,
) -> None:
    """Close every circuit breaker a previous scenario left open (a clean batch through each
    provider), then switch the fault on."""
    oracle, publisher, users = warm
    clean = mixed_requests(users, WARM)
    oracle.expect(clean)
    publisher.send(clean)
    verdict = oracle.wait(timeout=30, quiet_s=0)
    assert not verdict.problems, verdict.summary()
    for p in providers:
        pipeline.faults(provider=p, **fault)


def judge(
    oracle: Oracle, publisher: RequestFeed, requests: list[dict[str, Any]], timeout: float = 60
) -> Verdict:
    oracle.expect(requests)
    publisher.send(requests)
    verdict = oracle.wait(timeout=timeout, quiet_s=3)
    assert not verdict.problems, verdict.summary()
    assert sum(verdict.counts.values()) - verdict.counts["rejected"] == len(requests) + WARM
    assert all(n == 1 for n in verdict.receipts.values())
    return verdict


def test_500s_are_retried_then_dead_lettered(
    pipeline: Pipeline, users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    inject(pipeline, EVERY, warm=(oracle, publisher, users), mode="error", status=500, rate=0.5)
    verdict = judge(oracle, publisher, mixed_requests(users, 30))
    assert verdict.counts["delivered"] > 0, verdict.summary()  # most get through on a retry


def test_429_with_retry_after_is_honoured(
    pipeline: Pipeline, users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    inject(
        pipeline,
        PRIMARY,
        warm=(oracle, publisher, users),
        mode="throttle",
        status=429,
        retry_after=1,
        rate=1.0,
        count=3,
    )
    verdict = judge(oracle, publisher, mixed_requests(users, 20))
    assert verdict.counts["delivered"] == 20 + WARM, verdict.summary()  # 3 throttles per provider


def test_timeouts_never_cause_a_double_send(
    pipeline: Pipeline, users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    inject(pipeline, PRIMARY, warm=(oracle, publisher, users), mode="timeout", rate=1.0, count=2)
    judge(oracle, publisher, mixed_requests(users, 16), timeout=75)


def test_slow_provider_is_waited_for(
    pipeline: Pipeline, users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    inject(
        pipeline, PRIMARY, warm=(oracle, publisher, users), mode="slow", latency_ms=1500, rate=1.0
    )
    verdict = judge(oracle, publisher, mixed_requests(users, 16))
    assert verdict.counts["delivered"] == 16 + WARM, verdict.summary()
