"""The provider clients' tests run on both event loops the senders can run on
(`HERALD_EVENT_LOOP`): uvloop, the default, and the standard library's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

# Modules of clients that drive transports and protocols themselves.
_BOTH_LOOPS = ("test_providers_h2", "test_providers_http1", "test_providers_smtp_pool")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    module = getattr(item, "module", None)
    if module is not None and module.__name__.rsplit(".", 1)[-1] in _BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}  # pytest-asyncio wants a mapping for every test
