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
            samples += len(chunk.pcm) // 2
            audio = AudioOut(job.turn, job.epoch, chunk.pcm)
            if first_ts:
                await self.to_client(job, audio)
                continue
            # the first chunk: audio_start (once per turn), the audio and the progress note in one write
            rate, first_ts = chunk.sample_rate, time.time()
            start = [ClientEvent(p.dump(p.AudioStart(turn=job.turn, sample_rate=rate)))] if job.seq == 0 else []
            progress = TtsProgress(job.turn, job.epoch, job.seq, samples, rate, first_ts, False, 0.0, first_ts)
            await self.send(job, to_client=[*start, audio], to_session=[progress])
        elapsed = (time.perf_counter() - started) * 1000
        await self.to_session(job, TtsProgress(job.turn, job.epoch, job.seq, samples, rate, first_ts, True, elapsed, time.time()))
