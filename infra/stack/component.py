"""A JVM server the stack runs: its files, its process, its health check."""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from infra.stack.jars import ensure_jars
from infra.stack.settings import StackSettings
from schemas.errors import HeraldError

RESOURCES = Path(__file__).parent


def port_open(port: int, host: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class StackError(HeraldError, RuntimeError):
    pass


@dataclass
class Status:
    name: str
    healthy: bool
    pid: int | None
    port: int
    rss_mb: float | None
    detail: str


class Component(abc.ABC):
    name: str

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = settings.run_dir.resolve() / self.name

    # --- what each component defines -------------------------------------------------
    @property
    @abc.abstractmethod
    def port(self) -> int: ...

    @abc.abstractmethod
    def prepare(self, lib: Path) -> None:
        """Write configs and initialise storage; called before every start."""

    @abc.abstractmethod
    def java_args(self, lib: Path) -> list[str]:
        """JVM flags, classpath and main class."""

    @abc.abstractmethod
    def probe(self) -> str:
        """A real request to the server; returns a one-line detail or raises."""

    # --- shared lifecycle --------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.home / "pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "stdout.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and "java" in proc.name():
                return pid
        except psutil.Error:
            pass
        return None

    def healthy(self) -> tuple[bool, str]:
        # A closed port answers at once; the client probes would wait out their timeouts.
        if not port_open(self.port, self.settings.host):
            return False, f"nothing listening on {self.settings.host}:{self.port}"
        try:
            return True, self.probe()
        except Exception as exc:  # any failure of the probe means "not healthy yet"
            return False, f"{type(exc).__name__}: {exc}".splitlines()[0][:160]

    def status(self) -> Status:
        pid = self.pid()
        ok, detail = self.healthy()
        rss = None
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process(pid).memory_info().rss / 2**20
        return Status(self.name, ok, pid, self.port, rss, detail)

    def up(self, echo: bool = True) -> Status:
        ok, detail = self.healthy()
        if ok:
            if echo:
                print(f"{self.name}: already running and healthy ({detail})")
            return self.status()
        if self.pid() is None:
            self._start()
        return self._wait_healthy(echo)

    def _start(self) -> None:
        pom = RESOURCES / self.name / "pom.xml"
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        lib = ensure_jars(pom, self.settings, self.home / "logs" / "maven.log")
        self.prepare(lib)
        argv = [self.settings.java, *self.java_args(lib)]
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the shell that ran `make stack-up`
            )
        self.pid_file.write_text(str(proc.pid))

    def _wait_healthy(self, echo: bool) -> Status:
        started = time.monotonic()
        deadline = started + self.settings.start_timeout_s
        detail = ""
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StackError(f"{self.name} exited during start:\n{self.log_tail()}")
            ok, detail = self.healthy()
            if ok:
                if echo:
                    took = time.monotonic() - started
                    print(f"{self.name}: healthy on port {self.port} after {took:.1f}s ({detail})")
                return self.status()
            time.sleep(1.0)
        raise StackError(
            f"{self.name} not healthy after {self.settings.start_timeout_s:.0f}s "
            f"(last probe: {detail}):\n{self.log_tail()}"
        )

    def down(self, timeout: float = 45.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            psutil.Process(pid).wait(timeout)
        except psutil.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log yet)"
