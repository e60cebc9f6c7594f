"""`python -m services.resource`: run the resource service until SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from services.resource.config import ResourceSettings
from services.resource.service import ResourceService, build_planner
from shared.bus import Bus
from shared.config import get_settings


async def main() -> None:
    shared = get_settings()
    logging.basicConfig(level=shared.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ResourceSettings()
    bus = Bus.from_settings(shared)
    await bus.wait_ready(timeout=60)
    planner = await build_planner(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await ResourceService(settings, bus, planner, block_ms=shared.block_ms).run(stop)
    finally:
        await bus.close()


def run() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


if __name__ == "__main__":
    run()
