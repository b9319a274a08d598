"""Start, watch and stop herald's own processes (emulators, processor, senders, scheduler).

Used by the demo, the end-to-end and fault tests and the benchmark, so they all run the
real entry points as separate OS processes, exactly as an operator would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import HeraldError


@dataclass
class ServiceSpec:
    name: str
    argv: Sequence[str]
    ready_port: int | None = None  # healthy once this TCP port accepts connections
    env: Mapping[str, str] = field(default_factory=dict)


class ServiceError(HeraldError, RuntimeError):
    pass


@dataclass
class Service:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown hooks run."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(spec: ServiceSpec, log_dir: Path, *, timeout: float = 60.0) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{spec.name}.log"
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(spec.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: kill() reaches its children
        )
    svc = Service(spec, proc, log_path)
    if spec.ready_port is not None:
        deadline = time.monotonic() + timeout
        while not port_open(spec.ready_port):
            if not svc.alive():
                raise ServiceError(f"{spec.name} exited during start:\n{svc.log_tail()}")
            if time.monotonic() > deadline:
                svc.stop()
                raise ServiceError(f"{spec.name} not ready after {timeout:.0f}s:\n{svc.log_tail()}")
            time.sleep(0.2)
    return svc


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@contextlib.contextmanager
def running(specs: Sequence[ServiceSpec], log_dir: Path) -> Iterator[dict[str, Service]]:
    """Start every spec in order; stop them all (in reverse) however the block ends."""
    started: dict[str, Service] = {}
    try:
        for spec in specs:
            started[spec.name] = start(spec, log_dir)
        yield started
    finally:
        for svc in reversed(list(started.values())):
            svc.stop()
