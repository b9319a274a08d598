"""The processor's reads by key lists (dedup, users, devices, preferences, templates) go
to Cassandra unpaged: paged, an `IN` over partition keys is read one partition after the
other through Cassandra's multi-partition pager, at about twice its CPU per key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Session

from infra.cassandra import connect
from infra.settings import CassandraSettings
from processors.enrichment import CHUNK, Enricher
from processors.pipeline import DedupStore
from tests.conftest import CASSANDRA_PORT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    s = connect(CassandraSettings(port=CASSANDRA_PORT))
    try:
        yield s
    finally:
        s.cluster.shutdown()


def _sent_unpaged(session: Session, stmt: object, keys: list[str]) -> bool:
    future = session.execute_async(stmt, (keys,))
    future.result()
    return future.message.fetch_size is None


def test_every_lookup_by_keys_is_sent_unpaged(session: Session) -> None:
    dedup = DedupStore(session, max_backoff_s=0.1)
    enricher = Enricher(session, ttl_s=60, max_entries=100, max_backoff_s=0.1)
    lookups = [
        dedup._get,
        enricher._user,
        enricher._devices,
        enricher._prefs,
        enricher._template,
    ]
    for stmt in lookups:
        assert _sent_unpaged(session, stmt, ["nobody"]), stmt.query_string


def test_an_unpaged_dedup_lookup_finds_every_id_across_chunks(session: Session) -> None:
    dedup = DedupStore(session, max_backoff_s=0.1)
    marked = [f"lookup-{uuid.uuid4()}" for _ in range(CHUNK + 50)]
    absent = [f"lookup-{uuid.uuid4()}" for _ in range(CHUNK)]

    async def run() -> dict[str, tuple[str, str | None]]:
        await dedup.mark([(e, f"n-{e}", "done", f"t:0:{i}") for i, e in enumerate(marked)])
        return await dedup.states(set(marked) | set(absent))

    seen = asyncio.run(run())
    assert set(seen) == set(marked)
    assert seen[marked[7]] == ("done", "t:0:7")
