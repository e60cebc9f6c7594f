"""The STT worker: one transcript per job, partial, final or probe (a short sound over a reply:
words or not). A final job may carry the LLM job to start with its transcript (`SttJob.then`):
both are written in one epoch-gated round trip."""

from __future__ import annotations

import time

from shared.messages import SttJob, SttResult, followup
from shared.model import SttRequest
from shared.worker import Worker


class SttWorker(Worker):
    kind = "stt"

    async def process(self, job: SttJob) -> None:
        started = time.perf_counter()
        text = ""
        request = SttRequest(
            job.pcm, job.sample_rate, partial=job.partial or bool(job.probe), probe=bool(job.probe)
        )
        async for t in self.model.infer(request):
            text = (text + " " + t.text).strip() if text else t.text.strip()
        elapsed = (time.perf_counter() - started) * 1000
        final = not job.partial and not job.probe and not job.pause
        result = SttResult(job.turn, job.epoch, text, final, elapsed, time.time(), job.probe, job.pause)
        then = followup(job, text) if final else None
        await self.send(job, to_session=[result], jobs=[then] if then else [])
