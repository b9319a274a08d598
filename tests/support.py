"""What every test suite shares: waiting for a condition, failing loudly when it never holds."""

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
    """The first truthy value of `check()`; an AssertionError naming `what` (a text, or a
    function that describes the state at the time) once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g}s waiting for {described}")
        time.sleep(every)
