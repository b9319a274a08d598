"""Test support shared by every suite: waiting for a condition that must come true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    check: Callable[[], Any],
    timeout: float = 20.0,
    what: str | Callable[[], str] = "condition",
    every: float = 0.05,
) -> Any:
    """`check()`'s first truthy value; an AssertionError naming `what` after `timeout` s.

    `what` may be a callable, evaluated only on timeout, so the message can show the state
    that was last seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what() if callable(what) else what}"
            )
        time.sleep(every)
