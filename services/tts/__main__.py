"""`python -m services.tts [--stub]`: run a TTS worker (Piper on the CPU profile, chatterbox on the GPU)."""

from __future__ import annotations

import argparse

from shared.config import Settings
from shared.worker import worker_main


def build_model(settings: Settings, args: argparse.Namespace):
    if args.stub or settings.profile == "stub":
        from services.tts.stub import StubTts

        return StubTts()
    if settings.profile == "gpu":
        from services.tts.chatterbox import ChatterboxTts

        return ChatterboxTts()
    from services.tts.piper import PiperTts

    return PiperTts()


def make_worker(*a, **kw):
    from services.tts.worker import TtsWorker

    return TtsWorker(*a, **kw)


if __name__ == "__main__":
    worker_main("tts", build_model, make_worker, concurrency=2)
