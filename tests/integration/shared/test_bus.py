"""The bus against a real Redis."""

import asyncio

from jarvis.redis_server import RedisServer
from shared.bus import Bus
from shared.messages import DEAD_LETTER, Audio, Command, Wake


async def test_read_returns_typed_messages_in_order(bus):
    await bus.add_many(
        [("in:a", Audio(b"\x01\x00", 1.0), None), ("in:a", Command({"type": "stop"}, 2.0), None)]
    )
    entries = await bus.read({"in:a": "0-0"}, block_ms=100)
    assert [type(m) for _, _, m in entries] == [Audio, Command]


async def test_blocking_read_wakes_on_new_entry(bus):
    reader = asyncio.create_task(bus.read({"s": "$"}, block_ms=5000))
    await asyncio.sleep(0.1)
    await bus.add("s", Wake("hi"))
    entries = await asyncio.wait_for(reader, 2)
    assert entries[0][2] == Wake("hi")


async def test_maxlen_trims(bus):
    await bus.add_many([("trim", Wake(str(i)), 10) for i in range(500)])
    # approximate trimming drops whole macro nodes (100 entries), so the length is bounded, not exact
    assert await bus.redis.xlen("trim") <= 110


async def test_consumer_group_ack_and_reclaim(bus):
    await bus.ensure_group("jobs:x", "g")
    await bus.ensure_group("jobs:x", "g")  # idempotent
    await bus.add("jobs:x", Wake("job1"))
    got = await bus.consume("jobs:x", "g", "dead-worker", block_ms=100)
    assert got[0][1] == Wake("job1")
    # the consumer died without acking: another takes it over after min idle
    assert await bus.reclaim("jobs:x", "g", "live", min_idle_ms=10_000, max_deliveries=3) == []
    await asyncio.sleep(0.05)
    taken = await bus.reclaim("jobs:x", "g", "live", min_idle_ms=10, max_deliveries=3)
    assert taken[0][1] == Wake("job1")
    await bus.ack("jobs:x", "g", [taken[0][0]])
    assert (await bus.redis.xpending("jobs:x", "g"))["pending"] == 0


async def test_poison_job_goes_to_dead_letter(bus):
    await bus.ensure_group("jobs:p", "g")
    await bus.add("jobs:p", Wake("poison"))
    await bus.consume("jobs:p", "g", "w1", block_ms=100)
    for _ in range(3):  # each worker that takes it dies
        await asyncio.sleep(0.02)
        await bus.reclaim("jobs:p", "g", "w2", min_idle_ms=1, max_deliveries=3)
    await asyncio.sleep(0.02)
    assert await bus.reclaim("jobs:p", "g", "w3", min_idle_ms=1, max_deliveries=3) == []
    dead = await bus.redis.xrange(DEAD_LETTER)
    assert len(dead) == 1 and b"delivered" in dead[0][1][b"reason"]
    assert (await bus.redis.xpending("jobs:p", "g"))["pending"] == 0


async def test_undecodable_entry_is_dead_lettered_not_fatal(bus):
    await bus.ensure_group("jobs:g", "g")
    await bus.redis.xadd("jobs:g", {b"m": b"\xc1garbage"})
    await bus.add("jobs:g", Wake("good"))
    got = await bus.consume("jobs:g", "g", "w", block_ms=100)
    assert [m for _, m in got] == [Wake("good")]
    assert await bus.redis.xlen(DEAD_LETTER) == 1


async def test_epoch_gate_drops_cancelled_work(bus):
    await bus.redis.set("epoch:s", 3)
    assert await bus.add_if_epoch("epoch:s", 3, "out:s", Wake("fresh"), 100) is not None
    await bus.redis.incr("epoch:s")
    assert await bus.add_if_epoch("epoch:s", 3, "out:s", Wake("stale"), 100) is None
    assert [m for _, m in await bus.range("out:s")] == [Wake("fresh")]


async def test_survives_redis_restart(tmp_path):
    server = RedisServer(workdir=tmp_path / "r").start()
    b = Bus(server.url, socket_timeout=2, max_backoff=0.2)
    try:
        await b.add("s", Wake("before"))
        server.stop()
        pending = asyncio.create_task(b.add("s", Wake("after")))
        await asyncio.sleep(0.5)
        assert not pending.done()  # waiting, not crashing
        server = RedisServer(port=server.port, workdir=tmp_path / "r2").start()
        await asyncio.wait_for(pending, 10)
        assert [m for _, m in await b.range("s")] == [Wake("after")]  # new server, no persistence
    finally:
        await b.close()
        server.stop()
