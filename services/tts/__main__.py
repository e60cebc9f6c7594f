"""`python -m services.tts [--stub]`: run a TTS worker; the engine is `JARVIS_TTS_ENGINE`
(piper, chatterbox, stub), else the profile's (Piper on the CPU profile, chatterbox on the GPU)."""

from __future__ import annotations

import argparse

from shared.config import Settings
from shared.worker import worker_main


def build_model(settings: Settings, args: argparse.Namespace):
    from services.tts.config import TtsSettings

    tts = TtsSettings()
    engine = tts.engine_for(settings.profile, args.stub)
    if engine == "stub":
        from services.tts.stub import StubTts

        return StubTts(delay_s=getattr(args, "stub_delay", 0.0))
    if engine == "chatterbox":
        from services.tts.chatterbox import ChatterboxTts

        return ChatterboxTts(tts)
    from services.tts.piper import PiperTts

    return PiperTts(tts)


def make_worker(*a, **kw):
    from services.tts.worker import TtsWorker

    return TtsWorker(*a, **kw)


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--stub-delay", type=float, default=0.0, help="seconds each stub audio chunk takes")


if __name__ == "__main__":
    worker_main("tts", build_model, make_worker, concurrency=2, add_args=add_args)
