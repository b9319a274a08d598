"""CPU and RSS per process tree, sampled with psutil while a run is under way: percent
samples for the profile over time, and CPU seconds (user + system) over the whole window
for the cost per delivery."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import psutil


@dataclass
class ProcessUsage:
    name: str
    pid: int
    samples: int = 0
    cpu_sum: float = 0.0  # percent of one core, summed over samples
    cpu_max: float = 0.0
    rss_max: int = 0
    # CPU seconds per pid of the tree: the first reading and the latest one. A process that
    # exits between samples loses its last interval; the services of a run do not.
    cpu_first: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)

    @property
    def cpu_seconds(self) -> float:
        return sum(last - self.cpu_first.get(pid, 0.0) for pid, last in self.cpu_last.items())

    @property
    def cpu_avg(self) -> float:
        return self.cpu_sum / self.samples if self.samples else 0.0


def cpu_seconds(p: psutil.Process | None) -> float:
    """User + system CPU seconds of one process so far (0 when it is gone or unknown)."""
    if p is None:
        return 0.0
    try:
        t = p.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (Kafka and Cassandra are ours to watch)."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    return None


@dataclass
class Sampler:
    pids: dict[str, int]
    interval: float = 1.0
    # Names sampled without their children (the bench itself: its children are the run's
    # services, sampled under their own names).
    alone: frozenset[str] = frozenset()
    usage: dict[str, ProcessUsage] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _procs: dict[str, list[psutil.Process]] = field(default_factory=dict)

    def _tree(self, name: str, pid: int) -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root] if name in self.alone else [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _cpu_times(self, name: str, tree: list[psutil.Process]) -> None:
        u = self.usage.setdefault(name, ProcessUsage(name, self.pids[name]))
        for p in tree:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                u.cpu_last[p.pid] = t.user + t.system
                u.cpu_first.setdefault(p.pid, u.cpu_last[p.pid])

    def _baseline(self) -> None:
        self._procs = {name: self._tree(name, pid) for name, pid in self.pids.items()}
        for name, tree in self._procs.items():
            self._cpu_times(name, tree)
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    p.cpu_percent(None)  # the first call only sets the baseline

    def _loop(self) -> None:
        procs = self._procs
        while not self._stop.wait(self.interval):
            for name, tree in procs.items():
                cpu, rss = 0.0, 0
                for p in tree:
                    with contextlib.suppress(psutil.Error):
                        cpu += p.cpu_percent(None)
                        rss += p.memory_info().rss
                u = self.usage[name]
                u.samples += 1
                u.cpu_sum += cpu
                u.cpu_max = max(u.cpu_max, cpu)
                u.rss_max = max(u.rss_max, rss)
                self._cpu_times(name, tree)
        for name, tree in procs.items():
            self._cpu_times(name, tree)  # the window ends now, not at the last sample

    def __enter__(self) -> Sampler:
        # Here, not in the thread: the window opens now, whatever keeps the thread waiting.
        self._baseline()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the window (before the bench's own reading of the results, for example)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def __exit__(self, *exc: object) -> None:
        self.stop()
