"""API client secrets and quotas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from producers import clients
from producers.clients import (
    ApiClient,
    ClientStore,
    LoginThrottled,
    hash_secret,
    verify_secret,
)


def test_secret_hash_is_salted_and_verifies() -> None:
    a, b = hash_secret("s3cret"), hash_secret("s3cret")
    assert a != b and "s3cret" not in a
    assert a.startswith("scrypt$")
    assert verify_secret("s3cret", a) and verify_secret("s3cret", b)
    assert not verify_secret("s3cret!", a)
    assert not verify_secret("s3cret", "garbage")
    assert not verify_secret("s3cret", "bcrypt$1$2$3$4$5")


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


class _Done:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def add_callbacks(self, ok: Callable[[Any], None], err: Callable[[Any], None]) -> None:
        ok(self.rows)


class FakeSession:
    """Answers every query with the one stored client row (or none)."""

    def __init__(self, row: dict[str, Any] | None = None) -> None:
        self.row = row

    def prepare(self, cql: str) -> str:
        return cql

    def execute_async(self, stmt: str, params: Any) -> _Done:
        hit = self.row is not None and params[0] == self.row["app_key"]
        return _Done([self.row] if hit and self.row is not None else [])


ROW = {"app_key": "hk_known", "name": "billing", "secret_hash": hash_secret("right")}


def store(**throttle: Any) -> ClientStore:
    return ClientStore(FakeSession(ROW), **throttle)  # type: ignore[arg-type]


async def test_an_unknown_or_disabled_key_costs_a_scrypt_like_a_wrong_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = store()
    calls: list[str] = []

    def counted(secret: str, stored: str) -> bool:
        calls.append(secret)
        return verify_secret(secret, stored)

    monkeypatch.setattr(clients, "verify_secret", counted)
    assert await s.authenticate("hk_unknown", "guess") is None
    assert await s.authenticate("hk_known", "wrong") is None
    assert calls == ["guess", "wrong"]
    assert await s.authenticate("hk_known", "right") is not None


async def test_failed_logins_are_throttled_per_key_and_per_address() -> None:
    s = store(failed_logins_burst=2, failed_logins_per_minute=1)
    for _ in range(2):
        assert await s.authenticate("hk_known", "wrong", address="10.0.0.1") is None
    with pytest.raises(LoginThrottled) as err:
        await s.authenticate("hk_known", "right", address="10.0.0.2")  # same key
    assert 0 < err.value.retry_after <= 60
    with pytest.raises(LoginThrottled):
        await s.authenticate("hk_other", "x", address="10.0.0.1")  # same address
    assert await s.authenticate("hk_other", "x", address="10.0.0.3") is None


async def test_a_verified_client_is_not_locked_out_by_someone_elses_failures() -> None:
    s = store(failed_logins_burst=1, failed_logins_per_minute=1)
    assert await s.authenticate("hk_known", "right", address="10.0.0.1") is not None
    assert await s.authenticate("hk_known", "wrong", address="10.6.6.6") is None
    assert await s.authenticate("hk_known", "right", address="10.0.0.1") is not None
