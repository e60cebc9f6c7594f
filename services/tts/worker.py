"""The TTS worker: synthesises one sentence per job and streams its audio straight to the
client's `out:{sid}`, telling the orchestrator when the first chunk left and when it is done.
A held job's (`TtsJob.hold`: a preemptive reply) audio goes to the orchestrator instead, which
sends it on once the user's turn has ended."""

from __future__ import annotations

import time
from contextlib import aclosing

from shared import protocol as p
from shared.messages import AudioOut, ClientEvent, TtsJob, TtsProgress
from shared.model import TtsRequest
from shared.worker import Worker


class TtsWorker(Worker):
    kind = "tts"

    async def process(self, job: TtsJob) -> None:
        """Chunks that arrive while a write is in flight go out together in the next one; the
        first write also carries `audio_start` (once per turn) and the progress note."""
        started = time.perf_counter()
        samples, rate, first_ts = 0, 0, 0.0
        async with aclosing(self.ready_batches(self.model.infer(TtsRequest(job.text, job.voice)))) as batches:
            async for chunks in batches:
                audio = [AudioOut(job.turn, job.epoch, c.pcm) for c in chunks if c.pcm]
                if not audio:
                    continue
                samples += sum(len(a.pcm) for a in audio) // 2
                if first_ts and job.hold:
                    await self.send(job, to_session=audio)
                    continue
                if first_ts:
                    await self.send(job, to_client=audio)
                    continue
                rate, first_ts = chunks[0].sample_rate, time.time()
                start = (
                    [ClientEvent(p.dump(p.AudioStart(turn=job.turn, sample_rate=rate)))]
                    if job.seq == 0
                    else []
                )
                progress = TtsProgress(
                    job.turn, job.epoch, job.seq, samples, rate, first_ts, False, 0.0, first_ts
                )
                if job.hold:  # the orchestrator sends `audio_start` and the audio on, in this order
                    await self.send(job, to_session=[progress, *audio])
                else:
                    await self.send(job, to_client=[*start, *audio], to_session=[progress])
        elapsed = (time.perf_counter() - started) * 1000
        await self.to_session(
            job,
            TtsProgress(job.turn, job.epoch, job.seq, samples, rate, first_ts, True, elapsed, time.time()),
        )
