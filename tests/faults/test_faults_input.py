"""Bad input never blocks the stream and never vanishes: each bad record ends dead-lettered
or dropped with a reason, while good requests around it are delivered exactly once."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from cassandra.cluster import Session

from herald.bench import load
from herald.bench.oracle import Oracle, Verdict
from herald.bench.scenario import RequestFeed, make_request, mixed_requests
from schemas import codec
from schemas.channels import Platform

pytestmark = pytest.mark.faults

NOT_DELIVERED = {"dropped", "dead_lettered", "failed"}


def assert_refused(verdict: Verdict, request: dict[str, Any]) -> str:
    fate = verdict.fates[request["notification_id"]]
    assert fate.outcome in NOT_DELIVERED, f"{request['channels']}: expected a refusal, got {fate}"
    assert fate.reason, f"refused without a reason: {fate}"
    return fate.reason


def run(oracle: Oracle, publisher: RequestFeed, requests: list[dict[str, Any]]) -> Verdict:
    oracle.expect(requests)
    publisher.send(requests)
    verdict = oracle.wait(timeout=45)
    assert not verdict.problems, verdict.summary()
    return verdict


def test_malformed_bytes_and_unknown_fingerprint_are_dead_lettered(
    users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    good = mixed_requests(users, 8)
    garbage_key = f"faults-garbage-{uuid.uuid4()}".encode()
    unknown_key = f"faults-unknown-fp-{uuid.uuid4()}".encode()
    body = codec.encode(codec.REQUEST, {**good[0], "created_at": 1})[codec.HEADER_LEN :]
    oracle.expect_rejected(garbage_key)
    oracle.expect_rejected(unknown_key)
    oracle.expect(good)
    publisher.send(good[:4])
    publisher.raw(garbage_key, b"\x00\x01 definitely not avro")
    publisher.raw(unknown_key, codec.MAGIC + os.urandom(8) + body)
    publisher.send(good[4:])
    verdict = oracle.wait(timeout=45)
    assert not verdict.problems, verdict.summary()
    assert verdict.counts["delivered"] == len(good)
    assert verdict.rejected[garbage_key][0] and verdict.rejected[unknown_key][0]


def test_oversized_payloads_end_with_a_reason(
    users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    ios_user = next(u for u in users if any(d.platform == Platform.IOS for d in u.devices))
    # APNs refuses payloads over 4 KB; the literal body alone is twice that.
    huge_push = make_request(
        ios_user.user_id,
        "push",
        template_id=None,
        params={},
        content={"push": {"title": "big", "subject": None, "body": "x" * 8192, "html": None}},
    )
    # Close to Kafka's default 1 MB record limit: a request nobody should fan out.
    huge_request = make_request(users[1].user_id, "email", metadata={"blob": "y" * 900_000})
    good = mixed_requests(users, 4)
    verdict = run(oracle, publisher, [huge_push, huge_request, *good])
    assert_refused(verdict, huge_push)
    assert verdict.fates[huge_request["notification_id"]].outcome != "missing"
    assert all(verdict.fates[r["notification_id"]].outcome == "delivered" for r in good)


def test_unknown_user_is_dropped_with_a_reason(
    users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    ghost = make_request(f"faults-nobody-{uuid.uuid4()}", "email")
    verdict = run(oracle, publisher, [ghost, *mixed_requests(users, 3)])
    assert_refused(verdict, ghost)


def test_invalid_contacts_are_refused_with_a_reason(
    session: Session, users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    bad = load.User(
        user_id=f"faults-bad-contacts-{uuid.uuid4().hex[:8]}",
        email="not-an-email",
        phone="12345",
        locale="en",
        timezone="UTC",
        devices=(load.Device(str(uuid.uuid4()), Platform.IOS, "zz-not-a-token"),),
        opt_outs=(),
    )
    load.seed_cassandra(session, [bad])
    requests = [make_request(bad.user_id, ch) for ch in ("email", "sms", "push")]
    verdict = run(oracle, publisher, [*requests, *mixed_requests(users, 3)])
    for r in requests:
        assert_refused(verdict, r)


def test_missing_template_parameter_is_refused_with_a_reason(
    users: list[load.User], oracle: Oracle, publisher: RequestFeed
) -> None:
    missing = make_request(users[2].user_id, "email", params={"name": "Ada"})  # no `ref`
    verdict = run(oracle, publisher, [missing, *mixed_requests(users, 3)])
    assert_refused(verdict, missing)
