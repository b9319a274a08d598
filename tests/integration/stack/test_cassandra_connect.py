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
