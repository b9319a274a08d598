"""Fixtures for the processor's integration tests (helpers live in prockit)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.processors.prockit import Harness, make_harness


@pytest.fixture(scope="module")
def proc() -> Iterator[Harness]:
    for harness in make_harness(
        {"HERALD_RATE_CAPS": '{"marketing": {"limit": 2, "window_s": 3600}}'}
    ):
        harness.start()
        yield harness
