"""API client secrets and quotas."""

from __future__ import annotations

import math

from producers.clients import ApiClient, TokenBucket, hash_secret, verify_secret


def test_secret_hash_is_salted_and_verifies() -> None:
    a, b = hash_secret("s3cret"), hash_secret("s3cret")
    assert a != b and "s3cret" not in a
    assert a.startswith("scrypt$")
    assert verify_secret("s3cret", a) and verify_secret("s3cret", b)
    assert not verify_secret("s3cret!", a)
    assert not verify_secret("s3cret", "garbage")
    assert not verify_secret("s3cret", "bcrypt$1$2$3$4$5")


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, stamp=0.0)
    assert [bucket.take(now=0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(now=0.0) == 0.1
    assert bucket.take(now=0.1) == 0.0  # one token back after 100 ms
    assert bucket.take(3, now=0.2) == 0.2  # one token there, two more needed
    assert bucket.take(6, now=5.0) == math.inf  # more than the burst: never


def test_client_permissions() -> None:
    c = ApiClient("k", "billing", frozenset(), frozenset({"transactional"}), 1.0, 1)
    assert c.may_send_as("billing") and not c.may_send_as("marketing-jobs")
    assert c.may_send("transactional") and not c.may_send("marketing")
    multi = ApiClient("k", "jobs", frozenset({"a", "b"}), frozenset(), 1.0, 1)
    assert multi.may_send_as("a") and not multi.may_send_as("jobs")
    assert multi.may_send("anything")


def test_client_id_is_stable_public_and_per_key() -> None:
    a = ApiClient("hk_a", "billing", frozenset(), frozenset(), 1.0, 1)
    same_name = ApiClient("hk_b", "billing", frozenset(), frozenset(), 1.0, 1)
    assert a.client_id == ApiClient("hk_a", "other", frozenset(), frozenset(), 1.0, 1).client_id
    assert a.client_id != same_name.client_id
    assert len(a.client_id) == 12 and "hk_a" not in a.client_id


def test_no_contact_scope_by_default() -> None:
    assert ApiClient("k", "jobs", frozenset(), frozenset(), 1.0, 1).scopes == frozenset()
