"""The LLM worker: streams tokens (and tool context updates) to the session's orchestrator."""

from __future__ import annotations

import time

from shared.messages import ContextSet, LlmDone, LlmJob, LlmToken
from shared.model import ContextUpdate, LlmDelta, LlmRequest
from shared.worker import Worker


class LlmWorker(Worker):
    kind = "llm"

    async def process(self, job: LlmJob) -> None:
        started = time.perf_counter()
        stream = self.model.infer(LlmRequest(messages=job.messages, context=job.context))
        try:
            async for out in stream:
                if isinstance(out, LlmDelta):
                    if out.text:
                        await self.to_session(job, LlmToken(job.turn, job.epoch, out.text, time.time()))
                elif isinstance(out, ContextUpdate):
                    await self.to_session(job, ContextSet(job.turn, job.epoch, out.key, out.value))
        finally:
            await stream.aclose()  # a barge-in stops the generation upstream too
        await self.to_session(job, LlmDone(job.turn, job.epoch, (time.perf_counter() - started) * 1000, time.time()))
