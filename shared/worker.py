"""The job loop every model worker shares: consume every shard of `jobs:{kind}` as a consumer
group (one read loop per shard, sharing the worker's slots),
drop jobs whose session epoch moved on (barge-in), run the model off the event loop,
write results only while the epoch still holds, then ack (and delete a job carrying audio or
an image, so its payload leaves Redis at once). A heartbeat thread stamps `workers:{kind}`: when it stops, an
orchestrator runs this worker's unfinished jobs again and deletes its consumer
(`services.orchestrator.service`, the reaper).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Histogram

from shared.bus import Bus, Heartbeat
from shared.config import Settings
from shared.logs import session_var, turn_var
from shared.messages import JobFailed, epoch_key, in_stream, job_streams, out_stream, workers_key
from shared.model import Model

log = logging.getLogger("jarvis.worker")
T = TypeVar("T")

JOB_SECONDS = Histogram("jarvis_job_seconds", "Time to finish a job", ["kind"])
JOBS = Counter("jarvis_jobs_total", "Jobs by outcome", ["kind", "outcome"])


# job kinds whose entries carry bulk (a turn's audio, a camera frame): deleted once done, not
# left for the stream's trim (the others are small and trimmed by age and length)
BULKY = frozenset({"stt", "vlm"})


@dataclass(slots=True)
class Ready(Generic[T]):
    """A model's outputs that arrived while the caller was busy (`Worker.ready_batches`).
    `last`: the model's stream had ended, cleanly, when they were taken; nothing follows, so
    the caller can send its closing message in the same write."""

    items: list[T]
    last: bool


class Cancelled(Exception):
    """The session's epoch moved on: stop working on this job."""


class Worker(abc.ABC):
    kind = "worker"

    def __init__(
        self, settings: Settings, bus: Bus, model: Model, concurrency: int = 2, kind: str | None = None
    ) -> None:
        if kind:
            self.kind = kind  # e.g. an LLM worker serving the `vlm` role
        self.settings = settings
        self.bus = bus
        self.model = model
        self.streams = job_streams(self.kind, settings.job_shards)
        self.group = f"{self.kind}-workers"
        # unique across hosts and restarts: two hosts can share a hostname (containers) and a
        # pid (pid 1 in each container), and a restarted worker must not inherit the jobs its
        # predecessor held (they are reaped and run again)
        self.consumer = f"{self.kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task] = set()

    # ---- what subclasses implement --------------------------------------------------

    @abc.abstractmethod
    async def process(self, job: Any) -> None:
        """Run one job: call the model and send its results (`send`, `to_session`, `to_client`)."""

    # ---- helpers for subclasses -----------------------------------------------------

    async def send(
        self,
        job: Any,
        to_client: Sequence[Any] = (),
        to_session: Sequence[Any] = (),
        jobs: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Results for the client and the orchestrator (and follow-up jobs for other workers)
        in one atomic, epoch-gated round trip; raises Cancelled when the session's epoch moved
        on (the orchestrator no longer wants them)."""
        items = [(out_stream(job.sid), m, self.settings.out_maxlen) for m in to_client]
        items += [(in_stream(job.sid), m, self.settings.in_maxlen) for m in to_session]
        items += [(stream, m, self.settings.jobs_maxlen) for stream, m in jobs]
        if await self.bus.add_many_if_epoch(epoch_key(job.sid), job.epoch, items) is None:
            raise Cancelled

    async def to_session(self, job: Any, msg: Any) -> None:
        """A result for the orchestrator that owns the session."""
        await self.send(job, to_session=[msg])

    async def to_client(self, job: Any, msg: Any) -> None:
        """An event or audio for the client."""
        await self.send(job, to_client=[msg])

    @staticmethod
    async def ready_batches(outputs: AsyncIterator[T], first_alone: bool = True) -> AsyncGenerator[Ready[T]]:
        """A model's outputs, grouped: each `Ready` holds everything that arrived while the
        caller was busy with the previous one (its Redis write); a fast model never waits on
        one round trip per output. `first_alone`: the first output leaves at once, alone, even
        when more are ready (a TTS's first chunk: the user hears it while the rest is written);
        otherwise the first batch holds all the model had ready (an LLM's tokens are small:
        a reply ready at once goes, with its end, in one write). Closing this iterator
        (barge-in) closes the model's stream too."""
        pending: list[T] = []
        wake = asyncio.Event()
        finished = False

        async def produce() -> None:
            nonlocal finished
            try:
                alone = first_alone
                async for out in outputs:
                    pending.append(out)
                    wake.set()
                    if alone:  # the first output leaves alone, even from a model that never yields
                        alone = False
                        await asyncio.sleep(0)
            finally:
                close = getattr(outputs, "aclose", None)  # an async generator: stop it upstream too
                if close is not None:
                    await close()
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
                    # ended without an error: a failed model's last outputs are not its end
                    last = producer.done() and producer.exception() is None
                    yield Ready(batch, last)
                if finished and not pending:
                    break
            producer.result()  # a model error surfaces here
        finally:
            producer.cancel()

    # ---- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.bus.wait_ready(timeout=60)
        await self.model.load()
        heartbeat = Heartbeat(
            self.bus.url, workers_key(self.kind), self.consumer, self.settings.worker_heartbeat_ms / 1000
        )
        heartbeat.beat()  # alive before it joins: a fresh consumer is never taken for a dead one
        heartbeat.start()
        for stream in self.streams:  # ready: the launcher waits for this
            await self.bus.join_group(stream, self.group, self.consumer)
        log.info("ready", extra={"worker": self.consumer, "model": self.model.name})
        lanes = [asyncio.create_task(self._read(stream, stop)) for stream in self.streams]
        try:
            await asyncio.gather(*lanes)
        finally:
            for t in [*lanes, *self.tasks]:
                t.cancel()
            # its unfinished jobs are run again by a live worker as soon as this leaves the set
            await asyncio.to_thread(heartbeat.stop)
            await self.model.unload()

    async def _read(self, stream: str, stop: asyncio.Event) -> None:
        """One shard's loop: a job at a time, while a slot is free (on a cluster each shard may
        live on another node, so each has its own blocking read)."""
        while not stop.is_set():
            await self.slots.acquire()
            self.slots.release()
            jobs = await self.bus.consume(
                stream, self.group, self.consumer, block_ms=self.settings.block_ms, count=1
            )
            for eid, job in jobs:
                await self.slots.acquire()
                task = asyncio.create_task(self._handle(stream, eid, job))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _handle(self, stream: str, eid: bytes, job: Any) -> None:
        session_var.set(getattr(job, "sid", None))
        turn_var.set(getattr(job, "turn", None))
        started = time.perf_counter()
        finished = True
        try:
            # on one Redis no epoch check up front (a round trip on every job): a stale job is
            # cancelled at its first write, which the epoch gate refuses. On a cluster a job
            # handed off with another worker's results (the first TTS sentence) lands after
            # them, not atomically with its epoch check: look before doing the work
            look = self.bus.cluster and hasattr(job, "sid") and hasattr(job, "epoch")
            if look and await self.bus.epoch(epoch_key(job.sid)) != job.epoch:
                raise Cancelled
            await self.process(job)
            JOBS.labels(self.kind, "done").inc()
        except Cancelled:
            JOBS.labels(self.kind, "cancelled").inc()
            log.info("job cancelled by barge-in")
        except asyncio.CancelledError:
            # the worker is stopping mid-job: the job stays pending, and is run again elsewhere
            # once this worker's heartbeat is gone
            finished = False
            raise
        except Exception as exc:
            JOBS.labels(self.kind, "failed").inc()
            log.exception("job failed")
            try:
                await self.to_session(
                    job,
                    JobFailed(self.kind, job.turn, job.epoch, f"{type(exc).__name__}: {exc}", time.time()),
                )
            except Cancelled:
                pass
        finally:
            JOB_SECONDS.labels(self.kind).observe(time.perf_counter() - started)
            if finished and self.kind in BULKY:
                await self.bus.ack_delete(stream, self.group, [eid])
            elif finished:
                await self.bus.ack(stream, self.group, [eid])
            self.slots.release()


def worker_main(
    kind: str,
    build_model: Callable[[Settings, argparse.Namespace], Model],
    make_worker: Callable[..., Worker],
    concurrency: int,
    add_args: Callable[[argparse.ArgumentParser], None] | None = None,
    description: str | None = None,
) -> None:
    """The `python -m services.<kind>` entry point every worker shares."""
    from shared.service import run

    ap = argparse.ArgumentParser(prog=f"python -m services.{kind}", description=description)
    ap.add_argument("--stub", action="store_true", help="stub model (plumbing runs)")
    ap.add_argument("--concurrency", type=int, default=concurrency, help="jobs handled at once")
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    name = getattr(args, "role", None) or kind

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        bus = Bus.from_settings(settings)
        worker = make_worker(settings, bus, build_model(settings, args), args.concurrency, kind=name)
        await worker.run(stop)
        await bus.close()

    run(name, serve)
