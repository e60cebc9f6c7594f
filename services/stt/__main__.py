"""`python -m services.stt [--stub]`: run an STT worker."""

from __future__ import annotations

import argparse
import asyncio

from shared.bus import Bus
from shared.config import Settings
from shared.service import run


def build_model(settings: Settings, stub: bool):
    if stub or settings.profile == "stub":
        from services.stt.stub import StubStt

        return StubStt()
    from services.stt.whisper import WhisperStt

    return WhisperStt()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m services.stt")
    ap.add_argument("--stub", action="store_true", help="stub model (plumbing runs)")
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        from services.stt.worker import SttWorker

        bus = Bus.from_settings(settings)
        await SttWorker(settings, bus, build_model(settings, args.stub), args.concurrency).run(stop)
        await bus.close()

    run("stt", serve)


if __name__ == "__main__":
    main()
