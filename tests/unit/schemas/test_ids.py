"""Deterministic ids: the fast path mints exactly what the standard library's uuid5 does,
so ids already on topics and in Cassandra keep matching."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from schemas import ids

NS = uuid.UUID("6f1c1d0e-7c57-4b8e-9a55-2f6a8e3b9d10")


@given(st.text())
def test_uuid5_matches_the_standard_library(name: str) -> None:
    assert ids.uuid5(name) == str(uuid.uuid5(NS, name))


def test_ids_keep_their_documented_form() -> None:
    assert ids.notification_id("e1") == str(uuid.uuid5(NS, "notification:e1"))
    assert ids.delivery_id("n", "sms", "sms") == str(uuid.uuid5(NS, "delivery:n:sms:sms"))
    assert ids.status_id("s", "sent", 1) == str(uuid.uuid5(NS, "status:s:sent:1:"))
    assert uuid.UUID(ids.notification_id("e1")).version == 5
