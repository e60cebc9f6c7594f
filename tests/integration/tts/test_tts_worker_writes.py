"""The TTS worker on a real Redis: a sentence's audio reaches the client after `audio_start`,
and the orchestrator hears first that it started and last that it is done, with every sample
counted, whether the model ends within a write (the done note rides with the last audio) or
after it; a lone sentence's first audio is written before the orchestrator is told it started
(the gateway has it first), a busy worker's in the same write; a held sentence's audio goes to
the orchestrator instead, in the same order."""

import asyncio
import json
import time

import pytest

from services.tts.stub import StubTts
from services.tts.worker import TtsWorker
from shared.bus import Bus
from shared.config import Settings
from shared.messages import (
    AudioOut,
    ClientEvent,
    TtsJob,
    TtsProgress,
    epoch_key,
    in_stream,
    job_stream_for,
    out_stream,
)

TEXT = "Hello there, how are you today?"


async def _run(
    redis_url: str,
    sid: str,
    delay_s: float,
    hold: bool,
    writes: list[set[str]] | None = None,
    also: str | None = None,
) -> tuple[list, list]:
    """One sentence for `sid` (and, when `also` names a session, one for it too, queued at the
    same time); `writes` collects the streams of each epoch-gated write, in order."""
    settings = Settings(redis_url=redis_url, block_ms=200)
    bus = Bus(redis_url, socket_timeout=10)
    if writes is not None:
        add = bus.add_many_if_epoch

        async def recorded(key, epoch, items):
            writes.append({stream for stream, _, _ in items})
            return await add(key, epoch, items)

        bus.add_many_if_epoch = recorded  # type: ignore[method-assign]
    worker = TtsWorker(settings, bus, StubTts(delay_s), concurrency=2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        sids = [s for s in (also, sid) if s]
        for s in sids:
            await bus.redis.set(epoch_key(s), 2)
        jobs = [TtsJob(s, 1, 2, 0, TEXT, None, time.time(), hold) for s in sids]
        await bus.add_many([(job_stream_for("tts", j.sid, settings.job_shards), j, 100) for j in jobs])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            session = [m for _, m in await bus.range(in_stream(sid))]
            if any(isinstance(m, TtsProgress) and m.done for m in session):
                return session, [m for _, m in await bus.range(out_stream(sid))]
            await asyncio.sleep(0.02)
        raise AssertionError("the sentence never finished")
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.close()


@pytest.mark.parametrize("delay_s", [0.0, 0.01], ids=["ends-within-a-write", "ends-after"])
async def test_the_client_gets_every_chunk_and_the_orchestrator_its_start_and_end(redis_url, delay_s):
    session, client = await _run(redis_url, f"ttsw-{delay_s}", delay_s, hold=False)
    start = json.loads(client[0].json)
    assert isinstance(client[0], ClientEvent) and start["type"] == "audio_start"
    audio = [m for m in client[1:] if isinstance(m, AudioOut)]
    assert len(audio) == len(client) - 1 and audio
    samples = sum(len(a.pcm) for a in audio) // 2
    assert samples == len(TEXT) * 60 * 16  # the stub's tone: 60 ms a character
    notes = [m for m in session if isinstance(m, TtsProgress)]
    assert [n.done for n in notes] == [False, True]
    assert notes[-1].samples == samples and notes[-1].sample_rate == start["sample_rate"]


async def test_a_lone_sentence_s_first_audio_is_written_before_the_started_note(redis_url):
    writes: list[set[str]] = []
    sid = "ttsw-first"
    session, client = await _run(redis_url, sid, 0.0, hold=False, writes=writes)
    assert writes[0] == {out_stream(sid)}  # audio_start and the first chunk, alone
    assert in_stream(sid) in writes[1]  # then the note that it started
    assert [n.done for n in session if isinstance(n, TtsProgress)] == [False, True]


async def test_a_busy_worker_writes_the_first_audio_and_the_note_together(redis_url):
    writes: list[set[str]] = []
    sid, other = "ttsw-busy", "ttsw-busy-other"
    # both sentences in flight at once: each chunk takes 10 ms, so neither ends before the
    # other has started
    session, client = await _run(redis_url, sid, 0.01, hold=False, writes=writes, also=other)
    mine = [w for w in writes if w & {out_stream(sid), in_stream(sid)}]
    assert mine[0] == {out_stream(sid), in_stream(sid)}
    assert [n.done for n in session if isinstance(n, TtsProgress)] == [False, True]
    assert isinstance(client[0], ClientEvent) and json.loads(client[0].json)["type"] == "audio_start"


async def test_a_held_sentence_goes_to_the_orchestrator_in_order(redis_url):
    session, client = await _run(redis_url, "ttsw-held", 0.0, hold=True)
    assert client == []
    assert isinstance(session[0], TtsProgress) and not session[0].done
    assert isinstance(session[-1], TtsProgress) and session[-1].done
    audio = session[1:-1]
    assert audio and all(isinstance(a, AudioOut) for a in audio)
    assert session[-1].samples == sum(len(a.pcm) for a in audio) // 2
