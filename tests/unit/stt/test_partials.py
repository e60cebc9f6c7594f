"""Partial transcripts: every word said so far, at a cost that does not grow with the turn."""

from __future__ import annotations

import numpy as np

from services.stt.partials import PartialTranscriber
from shared.model import SttRequest, Transcript

RATE = 16000


class CountingModel:
    """A stand-in STT that names each stretch by its first sample and records what it decoded."""

    def __init__(self) -> None:
        self.decoded: list[float] = []

    async def infer(self, request: SttRequest):
        samples = np.frombuffer(request.pcm, dtype="<i2")
        self.decoded.append(len(samples) / request.sample_rate)
        yield Transcript(text=f"w{int(samples[0])}", final=False)


def utterance(seconds: float) -> bytes:
    # each second of "speech" starts with its own sample value, so stretches are told apart
    return np.repeat(np.arange(int(seconds), dtype="<i2") + 1, RATE).tobytes()


async def test_each_partial_decodes_a_bounded_stretch_and_keeps_every_word():
    model = CountingModel()
    t = PartialTranscriber(model.infer, chunk_s=5.0, min_tail_s=1.0)
    per_partial = []
    for second in range(2, 21):  # a partial every second of a 20 s turn
        before = sum(model.decoded)
        text = await t.transcribe(utterance(second), RATE)
        per_partial.append(sum(model.decoded) - before)
        whole = second // 5
        expected = [f"w{5 * i + 1}" for i in range(whole)]
        if second - 5 * whole >= 1:
            expected.append(f"w{5 * whole + 1}")
        assert text == " ".join(expected)
    assert max(per_partial) <= 5.0  # never more than one chunk's worth, at second 20 as at second 2
    assert sum(model.decoded) < 2 * sum(range(2, 21)) / 5  # linear in the turn, not quadratic


async def test_a_short_newest_stretch_waits_for_the_next_partial():
    model = CountingModel()
    t = PartialTranscriber(model.infer, chunk_s=5.0, min_tail_s=1.0)
    assert await t.transcribe(utterance(5) + b"\x01\x00" * (RATE // 2), RATE) == "w1"
    assert model.decoded == [5.0]
