"""The Faust app's producer buffer holds a whole batch's table writes: its fetch loop
does not stop for them mid-batch (the worker flushes them at the batch's end)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from processors.app import create_app
from processors.settings import ProcessorSettings


def test_the_changelog_buffer_holds_a_batch_of_table_writes(tmp_path: Any) -> None:
    async def main() -> None:
        settings = ProcessorSettings(batch_size=300, datadir=tmp_path, web_port=None)
        processor: Any = SimpleNamespace(producer=None)  # never used before the worker runs
        app = create_app(settings, processor=processor, scheduler=None)  # type: ignore[arg-type]
        assert app.producer.buffer.max_messages == 2_400
        assert app.producer.buffer.max_messages >= settings.batch_size * 5

    asyncio.run(main())
