"""The STT worker: one transcript per job, partial, final, pause (the turn so far at a pause,
decoded as a final would be) or probe (a short sound over a reply: words or not). A final job
may carry the LLM job to start with its transcript (`SttJob.then`): both are written in one
epoch-gated round trip.

Two lanes share one model in one process, so a partial never delays a final:
- `jobs:stt` (finals, pauses and probes: a turn or a barge-in waits on them) is served at once;
- `jobs:stt-partial` (partial transcripts, for display) is served only while no final or probe
  is running, one partial at a time, and a partial is dropped unanswered when it went stale
  while it waited: a newer partial of the same session, or a final made after it, came in. (The
  orchestrator has moved on in both cases: it asks for the next partial once a new turn
  starts.) Each partial decodes a bounded stretch of audio (`services.stt.partials`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import Counter

from services.stt.config import SttSettings
from services.stt.partials import PartialTranscriber
from shared.bus import Bus
from shared.config import Settings
from shared.messages import SttJob, SttResult, followup, partial_jobs_stream
from shared.model import Model, SttRequest, Transcript
from shared.worker import Worker

PARTIALS_DROPPED = Counter("jarvis_stt_partials_dropped_total", "Partial STT jobs dropped as stale")
PARTIAL_WAITERS = 8  # partial jobs one process holds at once (all but the newest per session go stale)
_REMEMBERED = 4096  # sessions whose newest partial / latest final turn a process remembers


class _Recent(OrderedDict[str, Any]):
    """A bounded map: the least recently written keys go first."""

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _REMEMBERED:
            self.popitem(last=False)


class Lanes:
    """What the two lanes of one process share: whether a final or probe is running, and what
    makes a waiting partial stale."""

    def __init__(self) -> None:
        self._urgent = 0
        self._clear = asyncio.Event()
        self._clear.set()
        self.partial = asyncio.Lock()  # one partial decode at a time
        self._newest: _Recent = _Recent()  # sid -> ts of the newest partial job seen
        self._final: _Recent = _Recent()  # sid -> ts of the newest final job seen

    def urgent_started(self, job: SttJob) -> None:
        self._urgent += 1
        self._clear.clear()
        if not job.probe and not job.pause:  # a pause's request may be spoken past
            self._final.put(job.sid, max(job.ts, self._final.get(job.sid, 0.0)))

    def urgent_done(self) -> None:
        self._urgent -= 1
        if not self._urgent:
            self._clear.set()

    def partial_seen(self, job: SttJob) -> None:
        self._newest.put(job.sid, max(job.ts, self._newest.get(job.sid, 0.0)))

    def stale(self, job: SttJob) -> bool:
        """A newer partial of the session came in, or a final made after this partial (which
        holds all its audio; a final the user then spoke past, a speculative one, does not
        hold the words of the partials made after it)."""
        newest, final = self._newest.get(job.sid, 0.0), self._final.get(job.sid, 0.0)
        return newest > job.ts or final >= job.ts

    async def wait_clear(self) -> None:
        """Until no final or probe is running (call with `partial` held)."""
        while self._urgent:
            await self._clear.wait()


class _Shared(Model[SttRequest, Transcript]):
    """The model as the partial lane sees it: the finals' lane loads and unloads it."""

    def __init__(self, model: Model[SttRequest, Transcript]) -> None:
        super().__init__()
        self.model = model
        self.name = model.name

    async def load(self) -> None:
        pass

    async def unload(self) -> None:
        pass

    def infer(self, request: SttRequest) -> AsyncIterator[Transcript]:
        return self.model.infer(request)


async def _text(model: Model[SttRequest, Transcript], request: SttRequest) -> str:
    parts = [t.text.strip() async for t in model.infer(request)]
    return " ".join(p for p in parts if p)


class PartialLane(Worker):
    """`jobs:stt-partial`: partial transcripts, when nothing more urgent is running."""

    kind = "stt"  # failures are reported as the STT stage's, as before

    def __init__(
        self, settings: Settings, bus: Bus, model: Model, lanes: Lanes, stt: SttSettings | None = None
    ) -> None:
        super().__init__(settings, bus, _Shared(model), concurrency=PARTIAL_WAITERS)
        self.streams = [partial_jobs_stream("stt", k) for k in range(settings.job_shards)]
        self.group = "stt-partial-workers"
        self.consumer = self.consumer.replace("stt-", "stt-partial-", 1)
        self.lanes = lanes
        s = stt or SttSettings()
        self.transcriber = PartialTranscriber(self.model.infer, s.partial_chunk_s, s.partial_min_tail_s)

    async def process(self, job: SttJob) -> None:
        self.lanes.partial_seen(job)
        async with self.lanes.partial:
            await self.lanes.wait_clear()
            if self.lanes.stale(job):
                PARTIALS_DROPPED.inc()
                return
            started = time.perf_counter()
            text = await self.transcriber.transcribe(job.pcm, job.sample_rate)
        elapsed = (time.perf_counter() - started) * 1000
        await self.send(job, to_session=[SttResult(job.turn, job.epoch, text, False, elapsed, time.time())])


class SttWorker(Worker):
    """`jobs:stt`: final transcripts and probes; runs the partial lane beside it."""

    kind = "stt"

    def __init__(
        self, settings: Settings, bus: Bus, model: Model, concurrency: int = 1, kind: str | None = None
    ) -> None:
        super().__init__(settings, bus, model, concurrency, kind)
        self.lanes = Lanes()
        self.partials = PartialLane(settings, bus, model, self.lanes)

    async def run(self, stop: asyncio.Event) -> None:
        await self.model.load()  # once, before either lane asks for it
        async with asyncio.TaskGroup() as lanes:
            lanes.create_task(super().run(stop))
            lanes.create_task(self.partials.run(stop))

    async def process(self, job: SttJob) -> None:
        if job.partial:  # from an orchestrator that predates the partial lane
            await self.partials.process(job)
            return
        self.lanes.urgent_started(job)
        try:
            started = time.perf_counter()
            probe = bool(job.probe)
            text = await _text(self.model, SttRequest(job.pcm, job.sample_rate, partial=probe, probe=probe))
            elapsed = (time.perf_counter() - started) * 1000
        finally:
            self.lanes.urgent_done()
        final = not probe and not job.pause
        result = SttResult(job.turn, job.epoch, text, final, elapsed, time.time(), job.probe, job.pause)
        then = followup(job, text, self.settings.job_shards) if final else None
        await self.send(job, to_session=[result], jobs=[then] if then else [])
