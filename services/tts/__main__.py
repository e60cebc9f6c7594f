"""`python -m services.tts [--stub]`: run a TTS worker."""

from __future__ import annotations

import argparse
import asyncio

from shared.bus import Bus
from shared.config import Settings
from shared.service import run


def build_model(settings: Settings, stub: bool):
    if stub or settings.profile == "stub":
        from services.tts.stub import StubTts

        return StubTts()
    if settings.profile == "gpu":
        from services.tts.chatterbox import ChatterboxTts

        return ChatterboxTts()
    from services.tts.piper import PiperTts

    return PiperTts()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m services.tts")
    ap.add_argument("--stub", action="store_true", help="stub model (plumbing runs)")
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        from services.tts.worker import TtsWorker

        bus = Bus.from_settings(settings)
        await TtsWorker(settings, bus, build_model(settings, args.stub), args.concurrency).run(stop)
        await bus.close()

    run("tts", serve)


if __name__ == "__main__":
    main()
