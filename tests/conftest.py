"""Suite-wide checks: integration tests need the real stack, and say so when it is down;
an event loop closes in bounded time, naming any task that ignores its cancellation."""

from __future__ import annotations

import asyncio
import asyncio.runners
import gc
import inspect
import io
import os
import socket

import pytest

from infra.diagnostics import await_chain
from infra.settings import DEV_PROFILE, CassandraSettings, KafkaSettings

# The services the suite starts inherit this: they run on a local stack with the secrets
# published in herald's source, which they refuse without it.
os.environ.setdefault("HERALD_PROFILE", DEV_PROFILE)

KAFKA = os.environ.get("HERALD_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
CASSANDRA_PORT = int(os.environ.get("HERALD_CASSANDRA__PORT", "9042"))
# What tests pass to clients they build themselves (services read the same variables).
KAFKA_SETTINGS = KafkaSettings(bootstrap_servers=KAFKA)
CASSANDRA_SETTINGS = CassandraSettings(port=CASSANDRA_PORT)


# pytest-asyncio closes a loop with `asyncio.Runner.close`, which cancels the tasks left on
# it and waits for them without a bound: one task that swallows its cancellation hangs
# the whole run after its last test. Here the wait is bounded and the teardown fails,
# naming each such task and where it stands.
CANCEL_GRACE_S = 60.0


class TaskIgnoredCancellation(AssertionError):
    pass


def _describe(task: asyncio.Task[object]) -> str:
    """The task, and for an async generator's `aclose()` (which has no stack of its own)
    the generator and the line it stands on."""
    coro = task.get_coro()
    for ref in gc.get_referents(coro) if type(coro).__name__ == "async_generator_athrow" else ():
        if inspect.isasyncgen(ref):
            frame = ref.ag_frame
            where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "finished"
            return f"{task!r}: closing async generator {ref.ag_code.co_qualname} at {where}"
    return repr(task)


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    waiting = asyncio.gather(*tasks, return_exceptions=True)
    _, pending = loop.run_until_complete(asyncio.wait({waiting}, timeout=CANCEL_GRACE_S))
    if pending:
        report = io.StringIO()
        for task in tasks:
            if not task.done():
                print(_describe(task), file=report)
                for line in await_chain(task):
                    print(f"  {line}", file=report)
        raise TaskIgnoredCancellation(
            f"tasks still running {CANCEL_GRACE_S:.0f} s after the loop cancelled them:\n"
            + report.getvalue()
        )
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during loop close",
                    "exception": task.exception(),
                    "task": task,
                }
            )


asyncio.runners._cancel_all_tasks = _cancel_all_tasks  # type: ignore[attr-defined]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def stack_is_up() -> None:
    host, port = KAFKA.split(",")[0].rsplit(":", 1)
    missing = [
        name
        for name, ok in (
            (f"Kafka at {KAFKA}", _reachable(host, int(port))),
            (f"Cassandra at 127.0.0.1:{CASSANDRA_PORT}", _reachable("127.0.0.1", CASSANDRA_PORT)),
        )
        if not ok
    ]
    if missing:
        pytest.fail(f"{', '.join(missing)} not reachable: run `make stack-up` first", pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every integration test gets the stack check, so a down stack fails fast and clearly.
    for item in items:
        if item.get_closest_marker("integration") or item.get_closest_marker("e2e"):
            item.fixturenames.insert(0, "stack_is_up")
