"""What the bus does across many sessions' keys, on one Redis and on a real 3-master Redis Cluster
(where a script, a transaction or an XREAD over keys of several slots is refused)."""

import asyncio

from shared.bus import Bus
from shared.messages import (
    DEAD_LETTER,
    JobLost,
    Wake,
    epoch_key,
    in_stream,
    job_stream_for,
    jobs_stream,
    out_stream,
)

SIDS = [f"session-{i}" for i in range(12)]  # spread over the cluster's three nodes


async def _bus(url: str):
    b = Bus(url, socket_timeout=10)
    await b.wait_ready()
    return b


async def test_a_batch_over_many_sessions_lands_in_order(topology_url):
    b = await _bus(topology_url)
    try:
        items = [(in_stream(sid), Wake(f"{sid}/{n}"), 100) for n in range(3) for sid in SIDS]
        await b.add_many([*items, ("ctl", Wake("start"), 100)])
        for sid in SIDS:
            assert [m.reason for _, m in await b.range(in_stream(sid))] == [f"{sid}/{n}" for n in range(3)]
        assert [m for _, m in await b.range("ctl")] == [Wake("start")]
    finally:
        await b.close()


async def test_one_read_over_many_sessions_gets_what_is_there_and_wakes_on_new(topology_url):
    b = await _bus(topology_url)
    try:
        await b.add_many([(out_stream(sid), Wake(sid), 100) for sid in SIDS])
        cursors: dict[str, bytes | str] = {out_stream(sid): "0-0" for sid in SIDS}
        got = await b.read(cursors, block_ms=1000)
        assert sorted(m.reason for _, _, m in got) == sorted(SIDS)  # every slot, in one call
        for stream, eid, _ in got:
            cursors[stream] = eid
        for round_ in range(3):  # the reads left blocked are reused: nothing lost, nothing twice
            reader = asyncio.create_task(b.read(cursors, block_ms=5000))
            await asyncio.sleep(0.1)
            sid = SIDS[round_ * 5]
            await b.add(out_stream(sid), Wake(f"new {round_}"))
            got = await asyncio.wait_for(reader, 3)
            assert [(s, m) for s, _, m in got] == [(out_stream(sid), Wake(f"new {round_}"))]
            cursors[out_stream(sid)] = got[0][1]
        assert await b.read(cursors, block_ms=200) == []
    finally:
        await b.close()


async def test_an_epoch_gated_write_with_a_job_for_another_slot(topology_url):
    b = await _bus(topology_url)
    sid = "talker"
    job_stream = job_stream_for("tts", sid, 1)
    try:
        await b.redis.set(epoch_key(sid), 2)
        items = [(out_stream(sid), Wake("audio"), 100), (job_stream, Wake("next sentence"), 100)]
        assert await b.add_many_if_epoch(epoch_key(sid), 2, items) is not None
        assert await b.add_many_if_epoch(epoch_key(sid), 1, items) is None  # stale: nothing lands
        assert [m for _, m in await b.range(out_stream(sid))] == [Wake("audio")]
        assert [m for _, m in await b.range(job_stream)] == [Wake("next sentence")]
    finally:
        await b.close()


async def test_a_dead_consumers_jobs_go_back_to_their_sessions(topology_url):
    b = await _bus(topology_url)
    stream, group = jobs_stream("tts"), "tts-workers"
    try:
        await b.join_group(stream, group, "dead")
        for sid in SIDS[:4]:
            await b.add(stream, Wake(sid))
        held = await b.consume(stream, group, "dead", block_ms=100, count=10)
        notices = [(in_stream(m.reason), JobLost("tts", 1, 1), 100) for _, m in held]
        await b.drop_consumer(stream, group, "dead", [eid for eid, _ in held], notices)
        for sid in SIDS[:4]:
            assert [type(m) for _, m in await b.range(in_stream(sid))] == [JobLost]
        assert await b.consumers(stream, group) == []
        assert await b.redis.xlen(stream) == 0
        # a poison entry is dead-lettered (another slot) and acked
        await b.redis.xadd(stream, {b"m": b"\xc1garbage"})
        assert await b.consume(stream, group, "live", block_ms=100) == []
        assert await b.redis.xlen(DEAD_LETTER) == 1
        assert (await b.redis.xpending(stream, group))["pending"] == 0
    finally:
        await b.close()
