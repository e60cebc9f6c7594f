"""A preemptive reply's jobs on a real Redis: the LLM worker (the real OpenAI client against a
scripted chat-completions endpoint) runs no tool with side effects for it and says where it
stopped; its first sentence's TTS job is held, so that audio goes to the orchestrator, never to
the client, until the turn has ended. The lanes, the epoch gate and Redis are the real ones."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx2
import openai

from services.llm.config import LlmSettings
from services.llm.openai_chat import OpenAIChat
from services.llm.worker import LlmWorker
from services.tts.stub import StubTts
from services.tts.worker import TtsWorker
from shared import codec
from shared.bus import Bus
from shared.config import Settings
from shared.messages import (
    AudioOut,
    ContextSet,
    LlmDone,
    LlmJob,
    SpokenReply,
    TtsJob,
    TtsProgress,
    epoch_key,
    in_stream,
    jobs_stream,
    out_stream,
)


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return "data: " + json.dumps({**body, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


class Server:
    """Streams each request the next scripted list of deltas (a tool call or text), as the
    chat-completions API does; records the requests (the worker's one-token warm-up aside)."""

    def __init__(self, *replies: list[dict[str, Any]]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body.get("max_tokens") == 1:  # the worker's warm-up at start
            deltas = [{"content": "Hi"}]
        else:
            self.requests.append(body)
            deltas = self.replies.pop(0)
        finish = "tool_calls" if any("tool_calls" in d for d in deltas) else "stop"
        lines = [chunk(d) for d in deltas] + [chunk({}, finish), "data: [DONE]"]
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content="\n\n".join(lines))


def chat(server: Server) -> OpenAIChat:
    client = openai.AsyncOpenAI(
        base_url="http://llm.test/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(server)),
    )
    return OpenAIChat(LlmSettings(base_url="http://llm.test/v1", model="m"), client=client)


async def xrange(bus: Bus, stream: str) -> list[Any]:
    return [codec.from_entry(fields) for _, fields in await bus.redis.xrange(stream)]


async def results_of(bus: Bus, sid: str, kind: type) -> list[Any]:
    return [m for m in await xrange(bus, in_stream(sid)) if isinstance(m, kind)]


async def until(check, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def run_worker(worker: Any, body) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def job(sid: str, text: str) -> LlmJob:
    messages = [{"role": "user", "content": text}]
    return LlmJob(sid, 1, 0, messages, {}, time.time(), SpokenReply(None), preemptive=True)


async def test_a_preemptive_reply_runs_no_tool_with_side_effects_and_says_where_it_stopped(bus):
    call = {"index": 0, "id": "c1", "type": "function"}
    call["function"] = {"name": "remember", "arguments": json.dumps({"key": "name", "value": "Ada"})}
    server = Server([{"tool_calls": [call]}], [{"content": "Noted, Ada."}])
    await bus.redis.set(epoch_key("s1"), 0)
    worker = LlmWorker(Settings(block_ms=100), bus, chat(server), concurrency=1)

    async def body() -> None:
        await bus.add(jobs_stream("llm"), job("s1", "Remember that my name is Ada and"), 1000)
        assert await until(lambda: results_of(bus, "s1", LlmDone))

    await run_worker(worker, body)
    (done,) = await results_of(bus, "s1", LlmDone)
    assert done.held_tool == "remember"
    assert await results_of(bus, "s1", ContextSet) == []  # nothing remembered
    assert len(server.requests) == 1  # and the model was not asked to go on
    assert await xrange(bus, jobs_stream("tts")) == []  # nothing to speak: it is answered again later


async def test_a_preemptive_replys_first_sentence_is_spoken_to_the_orchestrator_not_the_client(bus):
    reply = [{"content": "A compass shows you north, "}, {"content": "and it helps you find your way."}]
    server = Server(reply)
    await bus.redis.set(epoch_key("s2"), 0)
    llm = LlmWorker(Settings(block_ms=100), bus, chat(server), concurrency=1)
    tts = TtsWorker(Settings(block_ms=100), bus, StubTts(), concurrency=1)

    async def spoken() -> list[Any]:
        return [t for t in await results_of(bus, "s2", TtsProgress) if t.done]

    async def body() -> None:
        await bus.add(jobs_stream("llm"), job("s2", "Tell me what a compass is used for."), 1000)
        assert await until(spoken)

    await run_worker(llm, lambda: run_worker(tts, body))
    (held,) = await xrange(bus, jobs_stream("tts"))
    assert isinstance(held, TtsJob) and held.hold and held.text == "A compass shows you north,"
    assert await results_of(bus, "s2", AudioOut)  # the audio came to the orchestrator
    assert await xrange(bus, out_stream("s2")) == []  # and none of it (nor audio_start) to the client
