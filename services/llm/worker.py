"""The LLM worker: streams tokens (and tool context updates) to the session's orchestrator.
For a spoken reply (`LlmJob.speak`) it also starts the first sentence's TTS job, in the same
epoch-gated write as the tokens that close that sentence (the splitter's first unit: a clause
or a sentence, cut exactly as the orchestrator cuts it). A preemptive job (`LlmJob.preemptive`)
asks for that sentence's audio to be held by the orchestrator (`TtsJob.hold`) and runs no tool
with side effects. At start it warms the model server."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

from shared.messages import ContextSet, LlmDone, LlmJob, LlmToken, TtsJob, job_stream_for
from shared.model import ContextUpdate, LlmDelta, LlmRequest, LlmStopped
from shared.sentences import SentenceSplitter
from shared.worker import Worker


class LlmWorker(Worker):
    kind = "llm"

    async def run(self, stop: asyncio.Event) -> None:
        await self.model.load()
        warm = getattr(self.model, "warm", None)  # a model server's first request is slow
        task = asyncio.create_task(warm()) if warm is not None else None
        try:
            await super().run(stop)
        finally:
            if task is not None:
                task.cancel()

    async def process(self, job: LlmJob) -> None:
        """Stream the reply. Tokens that arrive while a write is in flight go out together
        (one token message) in the next one."""
        started = time.perf_counter()
        splitter = SentenceSplitter() if job.speak is not None else None

        def first_sentence(sentences: list[str]) -> list[tuple[str, TtsJob]]:
            nonlocal splitter
            if not sentences:
                return []
            splitter = None  # the orchestrator sends the rest, one at a time
            voice = job.speak.voice if job.speak else None
            return [
                (
                    job_stream_for("tts", job.sid, self.settings.job_shards),
                    TtsJob(job.sid, job.turn, job.epoch, 0, sentences[0], voice, time.time(), job.preemptive),
                )
            ]

        stopped: LlmStopped | None = None

        def closing() -> tuple[LlmDone, list[tuple[str, TtsJob]]]:
            """`done`, and the first sentence's TTS job if it is still to start."""
            done = LlmDone(
                job.turn,
                job.epoch,
                (time.perf_counter() - started) * 1000,
                time.time(),
                truncated=stopped is not None and stopped.reason == "length",
                held_tool=stopped.tool if stopped is not None and stopped.reason == "tool" else "",
            )
            # a reply stopped at a tool is answered again once the turn has ended: nothing to
            # speak; one cut at max_tokens drops its unfinished sentence as the orchestrator does
            rest = (
                first_sentence(splitter.finish(cut=done.truncated)[0])
                if splitter is not None and not done.held_tool
                else []
            )
            return done, rest

        request = LlmRequest(messages=job.messages, context=job.context, preemptive=job.preemptive)
        stream = self.model.infer(request)
        async with aclosing(self.ready_batches(stream, first_alone=False)) as batches:
            async for ready in batches:
                batch: list[LlmToken | ContextSet] = []
                for out in ready.items:
                    if isinstance(out, LlmDelta) and out.text:
                        if batch and isinstance(batch[-1], LlmToken):
                            batch[-1].text += out.text
                        else:
                            batch.append(LlmToken(job.turn, job.epoch, out.text, time.time()))
                    elif isinstance(out, ContextUpdate):
                        batch.append(ContextSet(job.turn, job.epoch, out.key, out.value))
                    elif isinstance(out, LlmStopped):
                        stopped = out
                tts: list[tuple[str, TtsJob]] = []
                if splitter is not None:
                    for m in batch:
                        if isinstance(m, LlmToken) and not tts:
                            tts = first_sentence(splitter.feed(m.text))
                if ready.last:  # the reply is complete: its end goes in the same write
                    done, rest = closing()
                    await self.send(job, to_session=[*batch, done], jobs=tts + rest)
                    return
                if batch:
                    await self.send(job, to_session=batch, jobs=tts)
        done, rest = closing()
        await self.send(job, to_session=[done], jobs=rest)
