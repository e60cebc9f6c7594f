"""The STT worker on a real Redis: finals and probes never wait behind partial transcripts, and a
partial that went stale while it waited is never decoded. The model is the stub with a delay, so
"running" lasts long enough to be seen; the lanes, the streams and Redis are the real ones."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from services.stt.stub import StubStt
from services.stt.worker import SttWorker
from shared.bus import Bus
from shared.config import Settings
from shared.messages import SttJob, SttResult, in_stream, jobs_stream, partial_jobs_stream, sid_of

RATE = 16000
DELAY = 0.4  # seconds each stub decode takes


def voiced(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


def job(sid: str, turn: int, seconds: float, partial: bool, ts: float | None = None) -> SttJob:
    return SttJob(sid, turn, 0, voiced(seconds), RATE, partial, ts or time.time())


async def results(bus: Bus, sids: list[str], want: int, timeout: float = 15.0) -> list[tuple[str, SttResult]]:
    """The first `want` STT results written to the sessions' streams, in the order they landed."""
    cursors: dict[str, bytes | str] = {in_stream(s): "0" for s in sids}
    got: list[tuple[float, str, SttResult]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for stream, eid, msg in await bus.read(cursors, block_ms=200):
            cursors[stream] = eid
            if isinstance(msg, SttResult):
                ms, seq = (int(x) for x in eid.decode().split("-"))
                got.append((ms + seq / 1e6, sid_of(stream), msg))
    got.sort(key=lambda g: g[0])
    return [(sid, r) for _, sid, r in got]


class Running:
    def __init__(self, bus: Bus) -> None:
        self.worker = SttWorker(Settings(block_ms=100), bus, StubStt(delay_s=DELAY), concurrency=1)
        self.stop = asyncio.Event()

    async def __aenter__(self) -> SttWorker:
        self.task = asyncio.create_task(self.worker.run(self.stop))
        bus = self.worker.bus
        lanes = ((jobs_stream("stt"), "stt-workers"), (partial_jobs_stream("stt"), "stt-partial-workers"))
        for stream, group in lanes:
            for _ in range(100):  # both lanes have joined their groups
                groups = await bus.redis.xinfo_groups(stream) if await bus.redis.exists(stream) else []
                if any(g["name"] in (group, group.encode()) for g in groups):
                    break
                await asyncio.sleep(0.05)
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def test_a_final_is_produced_while_a_long_partial_of_another_session_is_running(bus):
    async with Running(bus):
        # a 12 s utterance so far: two whole 5 s chunks and a 2 s stretch, three decodes
        await bus.add(partial_jobs_stream("stt"), job("talker", 1, 12.0, partial=True), 1000)
        await asyncio.sleep(DELAY / 2)  # the partial is being decoded now
        await bus.add(jobs_stream("stt"), job("asker", 4, 2.0, partial=False), 1000)
        got = await results(bus, ["talker", "asker"], want=2)
    assert [(sid, r.final) for sid, r in got] == [("asker", True), ("talker", False)]
    final = got[0][1]
    assert final.turn == 4 and final.text == "I spoke for two point zero seconds."
    assert got[1][1].text.startswith("I spoke for five point")  # the partial still came, after


async def test_a_final_is_produced_while_a_partial_of_the_same_session_is_running(bus):
    async with Running(bus):
        await bus.add(partial_jobs_stream("stt"), job("s1", 2, 12.0, partial=True), 1000)
        await asyncio.sleep(DELAY / 2)
        await bus.add(jobs_stream("stt"), job("s1", 2, 12.0, partial=False), 1000)
        got = await results(bus, ["s1"], want=2)
    assert [r.final for _, r in got] == [True, False]
    assert got[0][1].text == "I spoke for nine point zero seconds."  # the stub counts up to nine


async def test_partials_wait_for_finals_and_stale_ones_are_dropped(bus):
    async with Running(bus) as worker:
        await bus.add(jobs_stream("stt"), job("a", 1, 2.0, partial=False, ts=time.time() - 0.5), 1000)
        await asyncio.sleep(DELAY / 4)  # the final is running: partials queue behind it
        now = time.time()
        await bus.add(partial_jobs_stream("stt"), job("b", 1, 1.5, partial=True, ts=now), 1000)
        await bus.add(partial_jobs_stream("stt"), job("b", 1, 2.5, partial=True, ts=now + 1), 1000)  # newer
        # made before a's final (which holds its audio)
        await bus.add(partial_jobs_stream("stt"), job("a", 1, 1.5, partial=True, ts=now - 1), 1000)
        got = await results(bus, ["a", "b"], want=2)
        await asyncio.sleep(2 * DELAY)  # nothing else comes
        late = await results(bus, ["a", "b"], want=3, timeout=0.5)
    assert [(sid, r.final, r.text) for sid, r in got] == [
        ("a", True, "I spoke for two point zero seconds."),
        ("b", False, "I spoke for two point five seconds."),  # the newest of b's partials only
    ]
    assert len(late) == 2
    assert worker.partials.transcriber.decoded_s == 2.5


async def test_partials_made_after_a_final_the_user_spoke_past_are_answered(bus):
    async with Running(bus):
        await bus.add(jobs_stream("stt"), job("s", 1, 2.0, partial=False), 1000)  # speculative final
        await asyncio.sleep(DELAY / 4)
        await bus.add(partial_jobs_stream("stt"), job("s", 1, 3.0, partial=True), 1000)  # they went on
        got = await results(bus, ["s"], want=2)
    assert [(r.final, r.text) for _, r in got] == [
        (True, "I spoke for two point zero seconds."),
        (False, "I spoke for three point zero seconds."),
    ]
