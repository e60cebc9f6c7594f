"""Sharded job streams (`JARVIS_JOB_SHARDS`), on one Redis and on a Redis Cluster: a session's jobs
go to its shard, one worker serves every shard, and the reaper finds a dead worker's jobs on any
shard."""

import asyncio
import time

from services.orchestrator.service import Orchestrator
from services.tts.stub import StubTts
from services.tts.worker import TtsWorker
from shared.bus import Bus
from shared.config import Settings
from shared.messages import (
    AudioOut,
    JobLost,
    TtsJob,
    in_stream,
    job_shard,
    job_stream_for,
    jobs_stream,
    out_stream,
)

SHARDS = 3


def _sessions() -> list[str]:
    """One session id per shard."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < SHARDS:
        found.setdefault(job_shard(f"shard-test-{i}", SHARDS), f"shard-test-{i}")
        i += 1
    return [found[k] for k in range(SHARDS)]


async def _until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def test_one_worker_serves_every_shard(topology_url):
    settings = Settings(redis_url=topology_url, job_shards=SHARDS, block_ms=200)
    bus = Bus(topology_url, socket_timeout=10)
    worker = TtsWorker(settings, bus, StubTts(), concurrency=2)
    assert worker.streams == [jobs_stream("tts", k) for k in range(SHARDS)]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        sids = _sessions()
        for sid in sids:
            stream = job_stream_for("tts", sid, SHARDS)
            await bus.add(stream, TtsJob(sid, 1, 0, 0, "Hello there.", None, time.time()), 100)

        async def audio_everywhere() -> bool:
            outs = [await bus.range(out_stream(sid)) for sid in sids]
            return all(any(isinstance(m, AudioOut) for _, m in out) for out in outs)

        assert await _until(audio_everywhere), "a shard's job was not served"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await bus.close()


async def test_the_reaper_hands_back_a_dead_workers_jobs_from_every_shard(topology_url):
    settings = Settings(redis_url=topology_url, job_shards=SHARDS, worker_dead_ms=300)
    bus = Bus(topology_url, socket_timeout=10)
    try:
        sids = _sessions()
        for sid in sids:  # a worker took one job of each shard, then died (no heartbeat at all)
            stream = job_stream_for("tts", sid, SHARDS)
            await bus.join_group(stream, "tts-workers", "tts-gone-1")
            await bus.add(stream, TtsJob(sid, 2, 0, 1, "Lost.", None, time.time()), 100)
            assert await bus.consume(stream, "tts-workers", "tts-gone-1", block_ms=100)
        await asyncio.sleep(0.4)  # idle past worker_dead_ms
        await Orchestrator(settings, bus)._reap()
        for sid in sids:
            lost = [m for _, m in await bus.range(in_stream(sid)) if isinstance(m, JobLost)]
            assert [(m.kind, m.turn, m.seq) for m in lost] == [("tts", 2, 1)], sid
            assert await bus.consumers(job_stream_for("tts", sid, SHARDS), "tts-workers") == []
    finally:
        await bus.close()
