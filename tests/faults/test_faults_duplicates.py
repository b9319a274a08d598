"""The same request twice, and a delivered window replayed: nothing is sent twice."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from herald.bench import load
from herald.bench.oracle import Oracle
from herald.bench.scenario import Publisher, mixed_requests, wait_until
from schemas import codec

pytestmark = pytest.mark.faults


def test_same_request_published_twice_is_delivered_once(
    users: list[load.User], oracle: Oracle, publisher: Publisher
) -> None:
    requests = mixed_requests(users, 12)
    oracle.expect(requests)
    publisher.send(requests)
    # Back to back: the copy races the original through the processor.
    for r in requests[:6]:
        publisher.raw(r["user_id"].encode(), codec.encode(codec.REQUEST, r))
    publisher.flush()
    wait_until(lambda: oracle.settled(), 45, "the originals to settle")
    # Later: the copy arrives after the original was delivered.
    for r in requests[6:]:
        publisher.raw(r["user_id"].encode(), codec.encode(codec.REQUEST, r))
    publisher.flush()
    time.sleep(3)  # a double send would reach the emulator within this window
    verdict = oracle.wait(timeout=30, quiet_s=3)
    assert not verdict.problems, verdict.summary()
    assert verdict.counts["delivered"] == len(requests)
    assert all(n == 1 for n in verdict.receipts.values())


def test_replayed_window_sends_nothing_twice(
    users: list[load.User], oracle: Oracle, publisher: Publisher
) -> None:
    requests = mixed_requests(users, 16)
    oracle.expect(requests)
    start = datetime.now(UTC)
    publisher.send(requests)
    end = datetime.now(UTC)
    first = oracle.wait(timeout=45)
    assert not first.problems, first.summary()
    nids = [r["notification_id"] for r in requests]
    before = oracle.fanout_counts(nids)

    cmd = [
        sys.executable,
        "-c",
        "from herald.ops.cli import app; app()",
        "replay",
        "--topic",
        "requests",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    # The processor fans the replayed requests out again, to the same delivery ids.
    wait_until(
        lambda: all(n > before[d] for d, n in oracle.fanout_counts(nids).items()),
        45,
        "the replayed requests to be fanned out again",
    )
    verdict = oracle.wait(timeout=30, quiet_s=3)
    assert not verdict.problems, verdict.summary()
    assert all(n == 1 for n in verdict.receipts.values()), verdict.receipts
