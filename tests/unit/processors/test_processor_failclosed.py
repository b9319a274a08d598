"""Fail closed: a Cassandra error is retried until the query answers, never skipped."""

from __future__ import annotations

from typing import Any

import pytest
from cassandra import InvalidRequest, OperationTimedOut

from processors.enrichment import retrying


class FlakySession:
    """Answers like the driver's execute_async, failing the first `failures` calls."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def execute_async(self, _query: Any, _params: Any) -> Any:
        self.calls += 1
        fail = self.calls <= self.failures

        class Future:
            def add_callbacks(inner, ok: Any, err: Any) -> None:
                if fail:
                    err(self.error)
                else:
                    ok([{"ok": True}])

        return Future()


async def test_retries_until_cassandra_answers() -> None:
    session = FlakySession(3, OperationTimedOut("timeout"))
    rows = await retrying(session, "SELECT", (), max_backoff_s=0.01)  # type: ignore[arg-type]
    assert rows == [{"ok": True}]
    assert session.calls == 4


async def test_malformed_query_is_not_retried() -> None:
    session = FlakySession(1, InvalidRequest("bad"))
    with pytest.raises(InvalidRequest):
        await retrying(session, "SELECT", (), max_backoff_s=0.01)  # type: ignore[arg-type]
    assert session.calls == 1
