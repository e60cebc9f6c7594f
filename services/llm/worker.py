"""The LLM worker: streams tokens (and tool context updates) to the session's orchestrator."""

from __future__ import annotations

import time
from contextlib import aclosing

from shared.messages import ContextSet, LlmDone, LlmJob, LlmToken
from shared.model import ContextUpdate, LlmDelta, LlmRequest
from shared.worker import Worker


class LlmWorker(Worker):
    kind = "llm"

    async def process(self, job: LlmJob) -> None:
        """Stream the reply. Tokens that arrive while a write is in flight go out together
        (one token message) in the next one."""
        started = time.perf_counter()
        stream = self.model.infer(LlmRequest(messages=job.messages, context=job.context))
        async with aclosing(self.ready_batches(stream)) as batches:
            async for outputs in batches:
                batch: list[LlmToken | ContextSet] = []
                for out in outputs:
                    if isinstance(out, LlmDelta) and out.text:
                        if batch and isinstance(batch[-1], LlmToken):
                            batch[-1].text += out.text
                        else:
                            batch.append(LlmToken(job.turn, job.epoch, out.text, time.time()))
                    elif isinstance(out, ContextUpdate):
                        batch.append(ContextSet(job.turn, job.epoch, out.key, out.value))
                if batch:
                    await self.send(job, to_session=batch)
        await self.to_session(job, LlmDone(job.turn, job.epoch, (time.perf_counter() - started) * 1000, time.time()))
