"""Stub STT for plumbing runs: the transcript says how long the speech was, in words."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from shared.model import Model, SttRequest, Transcript

_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def duration_words(seconds: float) -> str:
    tenths = int(round(seconds * 10))
    return f"{_WORDS[min(tenths // 10, 9)]} point {_WORDS[tenths % 10]} seconds"


class StubStt(Model[SttRequest, Transcript]):
    """`delay_s`: how long each transcript takes, like a real model (tests of what happens while
    the STT is busy)."""

    name = "stub-stt"

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def infer(self, request: SttRequest) -> AsyncIterator[Transcript]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        samples = np.frombuffer(request.pcm, dtype="<i2").astype(np.float32) / 32768.0
        # count only the voiced part, so silence gives an empty transcript like a real model
        frame = request.sample_rate // 50
        n = len(samples) // frame
        voiced = 0
        if n:
            rms = np.sqrt((samples[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
            voiced = int((rms > 0.01).sum())
        seconds = voiced * frame / request.sample_rate
        text = "" if seconds < 0.1 else f"I spoke for {duration_words(seconds)}."
        yield Transcript(text=text, final=not request.partial)
