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
        """Chunks that arrive while a write is in flight go out together in the next one. The
        first write carries `audio_start` (once per turn), the first audio and the note to the
        orchestrator that the sentence started; the last one (when the model has ended by then)
        the note that it is done.

        When this is the worker's only job, the first audio is written alone and the started
        note right after: the gateway then has the audio before the orchestrator wakes for the
        note, instead of both waking at once on a CPU the gateway may not get first (one
        session: framework p50 -0.6 ms). With other jobs in flight the two go in one write: a
        second round trip per sentence costs more than it gains on a busy worker (the tail at
        125 sessions was longer when every sentence split)."""
        started = time.perf_counter()
        samples, rate, first_ts = 0, 0, 0.0

        def done() -> TtsProgress:
            elapsed = (time.perf_counter() - started) * 1000
            return TtsProgress(
                job.turn, job.epoch, job.seq, samples, rate, first_ts, True, elapsed, time.time()
            )

        async with aclosing(self.ready_batches(self.model.infer(TtsRequest(job.text, job.voice)))) as batches:
            async for ready in batches:
                audio = [AudioOut(job.turn, job.epoch, c.pcm) for c in ready.items if c.pcm]
                if not audio:
                    continue
                samples += sum(len(a.pcm) for a in audio) // 2
                to_client: list[AudioOut | ClientEvent] = []
                to_session: list[TtsProgress | AudioOut] = []
                if not first_ts:
                    rate, first_ts = ready.items[0].sample_rate, time.time()
                    started_note = TtsProgress(
                        job.turn, job.epoch, job.seq, samples, rate, first_ts, False, 0.0, first_ts
                    )
                    to_session.append(started_note)
                    if job.seq == 0 and not job.hold:
                        to_client.append(ClientEvent(p.dump(p.AudioStart(turn=job.turn, sample_rate=rate))))
                if job.hold:  # the orchestrator sends `audio_start` and the audio on, in this order
                    to_session += audio
                else:
                    to_client += audio
                if ready.last:
                    to_session.append(done())
                if to_session and to_client and not ready.last and len(self.tasks) <= 1:
                    await self.send(job, to_client=to_client)  # the first audio, alone (above)
                    to_client = []
                await self.send(job, to_client=to_client, to_session=to_session)
                if ready.last:
                    return
        await self.to_session(job, done())
