"""`python -m services.resource`: run the resource service (one per GPU host) until SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import sys

from shared.bus import Bus
from shared.config import Settings
from shared.service import run

EXIT_NO_GPU = 2


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    from services.resource.config import ResourceSettings
    from services.resource.gpu import GpuUnavailable
    from services.resource.service import ResourceService, build_planner

    rs = ResourceSettings()
    try:
        planner = await build_planner(rs)
    except GpuUnavailable as exc:
        # a clear refusal at start, not a service that plans against a GPU that is not there
        print(f"resource service: no usable GPU: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_NO_GPU) from None
    bus = Bus.from_settings(settings)
    try:
        await bus.wait_ready(timeout=60)
        await ResourceService(rs, bus, planner, block_ms=settings.block_ms).run(stop)
    finally:
        await bus.close()


if __name__ == "__main__":
    run("resource", serve)
