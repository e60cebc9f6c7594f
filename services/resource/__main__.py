"""`python -m services.resource`: run the resource service (one per GPU host) until SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio

from shared.bus import Bus
from shared.config import Settings
from shared.service import run


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    from services.resource.config import ResourceSettings
    from services.resource.service import ResourceService, build_planner

    bus = Bus.from_settings(settings)
    try:
        await bus.wait_ready(timeout=60)
        rs = ResourceSettings()
        planner = await build_planner(rs)
        await ResourceService(rs, bus, planner, block_ms=settings.block_ms).run(stop)
    finally:
        await bus.close()


if __name__ == "__main__":
    run("resource", serve)
