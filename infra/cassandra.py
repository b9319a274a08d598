"""Cassandra access shared by every service: connecting, migrations, awaiting queries."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    ResponseFuture,
    Session,
)
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import PreparedStatement, dict_factory

from infra.settings import CassandraSettings

# The driver leaves Nagle's algorithm on. A request it writes in more than one piece (a
# batch of ~48 ledger rows or more) then waits for the server's delayed ACK: 40 ms per
# batch instead of 2-5 ms, measured on a local node; small requests never showed it.
SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def connect(settings: CassandraSettings, *, keyspace: bool = True) -> Session:
    auth = None
    if settings.username and settings.password:
        auth = PlainTextAuthProvider(settings.username, settings.password.get_secret_value())
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(settings.local_dc)),
        row_factory=dict_factory,
        request_timeout=settings.request_timeout_s,
    )
    cluster = Cluster(
        settings.hosts,
        port=settings.port,
        auth_provider=auth,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        protocol_version=settings.protocol_version,
        sockopts=SOCKET_OPTIONS,
    )
    return cluster.connect(settings.keyspace if keyspace else None)


def migration_files() -> list[tuple[str, str]]:
    """(version, text) of every CQL file shipped in `infra/cql`, in apply order."""
    folder = resources.files("infra") / "cql"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".cql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".cql"), p.read_text()) for p in files]


def split_statements(cql: str) -> list[str]:
    # Comments go first: they may contain ";". CQL files here never put "--" inside strings.
    body = "\n".join(ln.split("--", 1)[0] for ln in cql.splitlines())
    return [stmt.strip() for stmt in body.split(";") if stmt.strip()]


def apply_migrations(hosts: Sequence[str], port: int) -> list[str]:
    """Apply every CQL file idempotently; returns the versions applied by this call."""
    session = connect(CassandraSettings(hosts=list(hosts), port=port), keyspace=False)
    try:
        applied: list[str] = []
        for version, text in migration_files():
            for stmt in split_statements(text):
                session.execute(stmt, timeout=60)
            done = session.execute(
                "SELECT version FROM herald.schema_migrations WHERE version = %s", (version,)
            ).one()
            if done is None:
                session.execute(
                    "INSERT INTO herald.schema_migrations (version, applied_at) VALUES (%s, %s)",
                    (version, datetime.now(UTC)),
                )
                applied.append(version)
        return applied
    finally:
        session.cluster.shutdown()


def prepare_lookup(session: Session, cql: str) -> PreparedStatement:
    """A read by a bounded list of keys (`IN ?` over at most one chunk of them), unpaged.

    Paged (the driver's default), Cassandra answers an `IN` over partition keys through its
    multi-partition pager, one partition after the other; unpaged, it reads them as one
    group. Cassandra's CPU per key against `processed_requests`, five interleaved pairs on
    the dev VM: 31-34 µs paged, 21-26 unpaged with 100 keys a query (the processor's chunk,
    half of them present); 19-39 against 13-17 with 500. The answer is a few rows per key
    at most, so one page is all there is anyway."""
    stmt = session.prepare(cql)
    stmt.fetch_size = None
    return stmt


def aresult(future: ResponseFuture) -> asyncio.Future[list[dict[str, Any]]]:
    """Bridge a driver ResponseFuture (driver threads) to an asyncio future (one page)."""
    loop = asyncio.get_running_loop()
    out: asyncio.Future[list[dict[str, Any]]] = loop.create_future()

    def ok(rows: Any) -> None:
        loop.call_soon_threadsafe(_settle, out, list(rows) if rows is not None else [], None)

    def err(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_settle, out, None, exc)

    future.add_callbacks(ok, err)
    return out


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


async def aexecute(session: Session, query: Any, params: Any = None) -> list[dict[str, Any]]:
    """Run a query without blocking the event loop."""
    future = session.execute_async(query, params)
    try:
        return await aresult(future)
    finally:
        _release(future)
        # A raised error's traceback holds this frame: it must not hold the request,
        # which holds the error (another cycle).
        del future


def _release(future: ResponseFuture) -> None:
    """Break the driver's reference cycle of an answered request, so reference counting
    frees it at once. A ResponseFuture holds its timeout timer and the timer its bound
    `_on_timeout`: the future, its message (a batch with every row's values), its events
    and locks, ~50 objects in all, became cyclic garbage that only the GC reclaimed. In
    the senders that was every Cassandra request, and 6% of their CPU went to collecting
    it (gc callbacks over `python -m herald.bench`). The driver cancels the timer before
    it sets the event, and never touches it after a final result; a request still
    pending (the awaiting task was cancelled) keeps it, to time out as it should."""
    event = getattr(future, "_event", None)  # the driver's internals: absent, do nothing
    if event is not None and event.is_set() and hasattr(future, "_timer"):
        future._timer = None
