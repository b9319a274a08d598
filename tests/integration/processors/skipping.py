"""`python -m tests.integration.processors.skipping`: the processor, with its Faust consumer
made to skip records the way faust-streaming 0.15 does after a restart's recovery: the
first `HERALD_TEST_SKIP_FIRST` records of each request partition it fetches are marked read
and never delivered to the stream. The worker must read them again and decide them
(processors/gaps.py); only this test entry point ever drops anything."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from processors import app
from processors.__main__ import main

SKIP = int(os.environ.get("HERALD_TEST_SKIP_FIRST", "5"))
TOPIC = os.environ["HERALD_REQUESTED_TOPIC"]
_new_consumer = app._App._new_consumer


def _skipping_consumer(self: app._App) -> Any:
    consumer = _new_consumer(self)
    deliver = consumer.callback
    seen: Counter[int] = Counter()

    async def callback(message: Any) -> None:
        if message.topic == TOPIC and seen[message.partition] < SKIP:
            seen[message.partition] += 1
            return  # fetched, marked read by Faust's loop, never delivered
        await deliver(message)

    consumer.callback = callback
    return consumer


app._App._new_consumer = _skipping_consumer  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
