"""Idempotency-Key fingerprints: the same JSON body, however written, is the same request."""

from __future__ import annotations

from producers.idempotency import fingerprint


def test_fingerprint_ignores_key_order_and_sees_every_value() -> None:
    a = {"user_id": "u-1", "content": {"sms": {"body": "hi"}}, "priority": "normal"}
    b = {"priority": "normal", "content": {"sms": {"body": "hi"}}, "user_id": "u-1"}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "priority": "high"})
    assert fingerprint(a) != fingerprint({"notifications": [a]})
    assert fingerprint({"body": "\ud800"})  # a lone surrogate is hashed, not an error
