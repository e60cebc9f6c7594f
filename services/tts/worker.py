"""The TTS worker: synthesises one sentence per job and streams its audio straight to the
client's `out:{sid}`, telling the orchestrator when the first chunk left and when it is done."""

from __future__ import annotations

import time

from shared import protocol as p
from shared.messages import AudioOut, ClientEvent, TtsJob, TtsProgress
from shared.model import TtsRequest
from shared.worker import Worker


class TtsWorker(Worker):
    kind = "tts"

    async def process(self, job: TtsJob) -> None:
        started = time.perf_counter()
        samples, rate, first_ts = 0, 0, 0.0
        async for chunk in self.model.infer(TtsRequest(job.text, job.voice)):
            if not chunk.pcm:
                continue
            if not first_ts:
                rate = chunk.sample_rate
                if job.seq == 0:
                    await self.to_client(job, ClientEvent(p.dump(p.AudioStart(turn=job.turn, sample_rate=rate))))
            await self.to_client(job, AudioOut(job.turn, job.epoch, chunk.pcm))
            samples += len(chunk.pcm) // 2
            if not first_ts:
                first_ts = time.time()
                await self.to_session(job, TtsProgress(job.turn, job.epoch, job.seq, samples, rate, first_ts, False, 0.0, first_ts))
        elapsed = (time.perf_counter() - started) * 1000
        await self.to_session(job, TtsProgress(job.turn, job.epoch, job.seq, samples, rate, first_ts, True, elapsed, time.time()))
