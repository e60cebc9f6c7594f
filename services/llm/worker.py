"""The LLM worker: streams tokens (and tool context updates) to the session's orchestrator."""

from __future__ import annotations

import asyncio
import time

from shared.messages import ContextSet, LlmDone, LlmJob, LlmToken
from shared.model import ContextUpdate, LlmDelta, LlmRequest
from shared.worker import Worker


class LlmWorker(Worker):
    kind = "llm"

    async def process(self, job: LlmJob) -> None:
        """Stream the reply. Tokens that arrive while a write is in flight go out together in
        the next one, so a fast model never waits on one Redis round trip per token."""
        started = time.perf_counter()
        pending: list[LlmToken | ContextSet] = []
        wake = asyncio.Event()
        finished = False

        async def produce() -> None:
            nonlocal finished
            stream = self.model.infer(LlmRequest(messages=job.messages, context=job.context))
            try:
                async for out in stream:
                    if isinstance(out, LlmDelta) and out.text:
                        if pending and isinstance(pending[-1], LlmToken):
                            last = pending[-1]
                            last.text += out.text  # coalesce with a token not yet written
                        else:
                            pending.append(LlmToken(job.turn, job.epoch, out.text, time.time()))
                    elif isinstance(out, ContextUpdate):
                        pending.append(ContextSet(job.turn, job.epoch, out.key, out.value))
                    wake.set()
            finally:
                await stream.aclose()  # a barge-in stops the generation upstream too
                finished = True
                wake.set()

        producer = asyncio.create_task(produce())
        try:
            while True:
                await wake.wait()
                wake.clear()
                if pending:
                    batch = pending[:]
                    pending.clear()
                    await self.send(job, to_session=batch)
                if finished:
                    break
            producer.result()  # a model error surfaces here
        finally:
            producer.cancel()
        await self.to_session(job, LlmDone(job.turn, job.epoch, (time.perf_counter() - started) * 1000, time.time()))
