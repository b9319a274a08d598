"""Fail closed: while Cassandra cannot answer, the processor sends nothing; when it is back,
the waiting requests go out, each once.

The processor reaches Cassandra through a TCP proxy owned by the test, which cuts every
connection and refuses new ones for a while: a Cassandra outage, without touching the
shared Cassandra.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from herald.services import free_port
from tests.conftest import CASSANDRA_PORT
from tests.integration.processors.prockit import Harness, make_harness, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


class Proxy:
    """Forwards 127.0.0.1:<port> to Cassandra; `cut()` drops everything until `restore()`."""

    def __init__(self, target: int = CASSANDRA_PORT) -> None:
        self.port = free_port()
        self.target = target
        self.up = threading.Event()
        self.up.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._server.close()


@pytest.fixture
def behind_proxy() -> Iterator[tuple[Harness, Proxy]]:
    proxy = Proxy()
    try:
        for h in make_harness({"HERALD_CASSANDRA__PORT": str(proxy.port)}):
            h.start()
            yield h, proxy
    finally:
        proxy.close()


def test_nothing_is_sent_while_cassandra_is_down(behind_proxy: tuple[Harness, Proxy]) -> None:
    h, proxy = behind_proxy
    accepted = ("accepted", None, None)
    warm = h.user()
    first = h.publish(h.request(warm, channels=["sms"]))
    wait_for(lambda: accepted in h.watcher.outcomes(first), what="accepted before the outage")

    proxy.cut()
    opted_out = h.user(opt_outs=(("sms", "*"),))  # written directly, not through the proxy
    during = [
        h.publish(h.request(opted_out, channels=["sms"], category="social")),
        h.publish(h.request(warm, channels=["sms"])),  # cached user: dedup still needs Cassandra
    ]
    quiet_until = time.monotonic() + 4
    while time.monotonic() < quiet_until:  # nothing at all may come out during the outage
        assert all(h.watcher.outcomes(n) == [] for n in during)
        assert all(h.watcher.delivered(n) == [] for n in during)
        time.sleep(0.1)

    proxy.restore()
    wait_for(
        lambda: h.watcher.outcomes(during[0]) == [("dropped", "opted_out", "sms")],
        timeout=60,
        what="the opt-out honoured after the outage",
    )
    wait_for(lambda: accepted in h.watcher.outcomes(during[1]), timeout=60)
    assert h.watcher.delivered(during[0]) == []
    wait_for(lambda: len(h.watcher.delivered(during[1])) == 1, what="one delivery")
