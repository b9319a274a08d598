"""`python -m infra.emulators`: every provider emulator + the control API, until SIGTERM/SIGINT.

Ports and credentials come from `HERALD_EMULATORS__*` (see `EmulatorSettings`).
"""

from __future__ import annotations

import asyncio
import signal

from infra.emulators.server import Emulators, EmulatorSettings
from infra.logging import configure_logging


async def _main() -> None:
    settings = EmulatorSettings()
    emulators = Emulators(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, emulators.request_stop)
    await emulators.run_forever()


def main() -> None:
    configure_logging("emulators")
    asyncio.run(_main())


if __name__ == "__main__":
    main()
