"""The LLM worker on a real Redis: a spoken reply reaches the session whole (every token, then
`done`) with the first sentence's TTS job, and a model that fails mid-reply ends in `JobFailed`,
never in `done`, so the orchestrator does not take half a reply for a finished one."""

import asyncio
import time
from collections.abc import AsyncIterator

from services.llm.stub import StubLlm
from services.llm.worker import LlmWorker
from shared.bus import Bus
from shared.config import Settings
from shared.messages import (
    JobFailed,
    LlmDone,
    LlmJob,
    LlmToken,
    SpokenReply,
    TtsJob,
    epoch_key,
    in_stream,
    job_stream_for,
)
from shared.model import LlmDelta, LlmRequest


class _FailsMidReply(StubLlm):
    async def infer(self, request: LlmRequest) -> AsyncIterator[LlmDelta]:
        yield LlmDelta("Half")
        yield LlmDelta(" a")
        raise RuntimeError("server went away")


async def _session(bus: Bus, settings: Settings, sid: str, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [m for _, m in await bus.range(in_stream(sid))]
        if any(isinstance(m, (LlmDone, JobFailed)) for m in got):
            return got
        await asyncio.sleep(0.02)
    raise AssertionError("the worker never finished the job")


async def _run(redis_url: str, model: StubLlm, sid: str, words: str):
    settings = Settings(redis_url=redis_url, block_ms=200)
    bus = Bus(redis_url, socket_timeout=10)
    worker = LlmWorker(settings, bus, model, concurrency=2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await bus.redis.set(epoch_key(sid), 3)
        job = LlmJob(sid, 1, 3, [{"role": "user", "content": words}], {}, time.time(), SpokenReply("v1"))
        await bus.add(job_stream_for("llm", sid, settings.job_shards), job, 100)
        got = await _session(bus, settings, sid)
        tts = [m for _, m in await bus.range(job_stream_for("tts", sid, settings.job_shards))]
        return got, [j for j in tts if isinstance(j, TtsJob) and j.sid == sid]
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.close()


async def test_a_spoken_reply_arrives_whole_with_its_first_sentence_to_speak(redis_url):
    got, tts = await _run(redis_url, StubLlm(), "llmw-whole", "what is the weather like")
    text = "".join(m.text for m in got if isinstance(m, LlmToken))
    assert text == "You said: what is the weather like."
    assert isinstance(got[-1], LlmDone) and not got[-1].truncated
    assert [j.text for j in tts] == ["You said: what is the weather like."]
    assert tts[0].voice == "v1" and tts[0].epoch == 3


async def test_a_model_failing_mid_reply_is_reported_not_finished(redis_url):
    got, tts = await _run(redis_url, _FailsMidReply(), "llmw-fails", "tell me a story")
    assert not any(isinstance(m, LlmDone) for m in got)
    failed = [m for m in got if isinstance(m, JobFailed)]
    assert failed and "server went away" in failed[0].error
    assert tts == []  # half a sentence is never spoken
