"""Every service's connection to Cassandra (`infra.cassandra.connect`)."""

import socket

import pytest

from infra.cassandra import connect
from infra.settings import CassandraSettings
from tests.conftest import CASSANDRA_PORT

pytestmark = pytest.mark.integration


def test_connections_send_without_nagle() -> None:
    # With Nagle's algorithm on, a large batch waited 40 ms for the server's delayed ACK.
    session = connect(CassandraSettings(port=CASSANDRA_PORT))
    try:
        session.execute("SELECT release_version FROM system.local")
        connections = [session.cluster.control_connection._connection]
        connections += [pool._connection for pool in session._pools.values()]
        assert len(connections) >= 2
        for conn in connections:
            assert conn._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        session.cluster.shutdown()


def test_an_answered_request_is_freed_without_the_cyclic_gc() -> None:
    """A driver request left as cyclic garbage holds its whole message until the GC
    runs, and the GC's passes over ~50 objects a request cost the senders 6% of their
    CPU: `aexecute` leaves none behind, answered or failed."""
    import asyncio
    import gc

    from cassandra import InvalidRequest
    from cassandra.cluster import ResponseFuture

    from infra.cassandra import aexecute

    session = connect(CassandraSettings(port=CASSANDRA_PORT), keyspace=False)

    async def run() -> None:
        for _ in range(20):
            await aexecute(session, "SELECT release_version FROM system.local")
        for _ in range(5):
            with pytest.raises(InvalidRequest):
                await aexecute(session, "SELECT nothing FROM system.no_such_table")

    try:
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            asyncio.run(run())
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, ResponseFuture)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert left == []
    finally:
        session.cluster.shutdown()
