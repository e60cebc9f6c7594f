"""`python -m services.stt [--stub]`: run an STT worker."""

from __future__ import annotations

import argparse

from shared.config import Settings
from shared.worker import worker_main


def build_model(settings: Settings, args: argparse.Namespace):
    if args.stub or settings.profile == "stub":
        from services.stt.stub import StubStt

        return StubStt(delay_s=args.stub_delay)
    from services.stt.whisper import WhisperStt

    return WhisperStt()


def make_worker(*a, **kw):
    from services.stt.worker import SttWorker

    return SttWorker(*a, **kw)


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--stub-delay", type=float, default=0.0, help="seconds each stub transcript takes")


if __name__ == "__main__":
    worker_main("stt", build_model, make_worker, concurrency=1, add_args=add_args)
