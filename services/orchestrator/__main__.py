"""`python -m services.orchestrator`: run an orchestrator (several may run side by side)."""

from __future__ import annotations

import asyncio

from shared.bus import Bus
from shared.config import Settings
from shared.service import run


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    from services.orchestrator.service import Orchestrator
    from shared.vad import SileroVad

    bus = Bus.from_settings(settings)
    vad = await asyncio.to_thread(SileroVad)
    from services.orchestrator.config import TurnSettings
    from services.orchestrator.loading import ResourceBridge

    resource = ResourceBridge(bus, TurnSettings().models)
    await Orchestrator(settings, bus, vad=vad, resource=resource).run(stop)
    await bus.close()


if __name__ == "__main__":
    run("orchestrator", serve)
