"""The passthrough baseline copies exactly this run's records; seeding writes readable rows."""

from __future__ import annotations

import uuid

import pytest

from herald.bench import load, passthrough
from infra.cassandra import connect
from schemas import codec
from tests.conftest import CASSANDRA_SETTINGS, KAFKA_SETTINGS

pytestmark = pytest.mark.integration


def test_passthrough_copies_every_record_once() -> None:
    users = load.make_users(20, prefix=f"pt-{uuid.uuid4().hex[:8]}")
    payloads = []
    for r in load.RequestMix(users).requests(500, run_id=f"pt-{uuid.uuid4().hex[:8]}"):
        r["created_at"] = 1
        payloads.append((r["user_id"].encode(), codec.encode(codec.REQUEST, r)))
    result = passthrough.run(KAFKA_SETTINGS, payloads)
    assert result.records == 500
    assert result.records_per_s > 0


def test_seeded_users_devices_and_templates_are_readable() -> None:
    session = connect(CASSANDRA_SETTINGS)
    try:
        users = load.make_users(10, prefix=f"seed-{uuid.uuid4().hex[:8]}", devices_per_user=(2, 2))
        counts = load.seed_cassandra(session, users)
        assert counts["users"] == 10 and counts["devices"] == 20
        row = session.execute(
            "SELECT email, phone, locale FROM herald.users WHERE user_id = %s", (users[0].user_id,)
        ).one()
        assert row == {"email": users[0].email, "phone": users[0].phone, "locale": users[0].locale}
        devices = session.execute(
            "SELECT platform FROM herald.devices_by_user WHERE user_id = %s", (users[0].user_id,)
        ).all()
        assert len(devices) == 2
        tpl = session.execute(
            "SELECT body FROM herald.templates WHERE template_id = %s AND locale = 'en'"
            " AND channel = 'email'",
            (load.template_id("marketing"),),
        ).one()
        assert "{{ name }}" in tpl["body"]
    finally:
        session.cluster.shutdown()
