"""`python -m infra.emulators`: every provider emulator + the control API, until SIGTERM/SIGINT.

Ports and credentials come from `HERALD_EMULATORS__*` (see `EmulatorSettings`).
"""

from __future__ import annotations

import asyncio
import signal

from infra.emulators.server import Emulators, EmulatorSettings
from infra.logging import configure_logging


async def _main(settings: EmulatorSettings) -> None:
    emulators = Emulators(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, emulators.request_stop)
    await emulators.run_forever()


def main() -> None:
    configure_logging("emulators")
    settings = EmulatorSettings()
    if settings.lean:
        # The benchmarks' emulators are raw protocols: uvloop runs their transports and
        # callbacks in C (the strict ones keep the standard loop their servers are tested on).
        import uvloop

        uvloop.run(_main(settings))
    else:
        asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
