"""Stub TTS for plumbing runs: a soft tone whose length follows the text (60 ms a character)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from shared.model import AudioChunk, Model, TtsRequest

RATE = 16000
MS_PER_CHAR = 60
CHUNK_MS = 100


class StubTts(Model[TtsRequest, AudioChunk]):
    name = "stub-tts"
    sample_rate = RATE

    def __init__(self, delay_s: float = 0.0) -> None:
        """`delay_s`: how long each 100 ms chunk takes, like a real model (tests of what happens
        while the TTS is busy)."""
        super().__init__()
        self.delay_s = delay_s

    async def infer(self, request: TtsRequest) -> AsyncIterator[AudioChunk]:
        n = len(request.text) * MS_PER_CHAR * RATE // 1000
        step = CHUNK_MS * RATE // 1000
        for i in range(0, n, step):  # chunk by chunk, so the first one is ready at once
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            t = np.arange(i, min(n, i + step)) / RATE
            yield AudioChunk((0.2 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes(), RATE)
