"""Redis from testcontainers (the locally built jarvis/redis image) with a real bus round trip."""

from __future__ import annotations

import time

import pytest

from shared.bus import Bus
from shared.messages import Command, SessionStart

from .helpers import REDIS_IMAGE, require_images

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def redis_url(docker_client):
    require_images(docker_client, REDIS_IMAGE)
    pytest.importorskip("testcontainers", reason="testcontainers is not installed (the dev extra)")
    from testcontainers.core.config import testcontainers_config

    # Ryuk (the reaper) is an image from a registry: off; the fixture removes its container
    testcontainers_config.ryuk_disabled = True
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.redis import RedisContainer

    with RedisContainer(REDIS_IMAGE) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"


async def test_bus_round_trip(redis_url: str) -> None:
    bus = Bus(redis_url, socket_timeout=10)
    try:
        await bus.wait_ready(timeout=10)
        # plain streams: what the gateway and the orchestrator do with in:/out:
        sent = Command({"type": "text", "text": "hello"}, time.time())
        eid = await bus.add("in:test", sent, maxlen=100)
        got = await bus.read({"in:test": "0-0"}, block_ms=1000)
        assert [(s, i) for s, i, _ in got] == [("in:test", eid)]
        assert got[0][2] == sent
        # consumer groups: what the workers and orchestrators do with jobs:/ctl
        await bus.ensure_group("ctl:test", "orchestrators")
        start = SessionStart("s1", "sts", None, 16000, False, {"k": [1, 2]}, False, time.time())
        await bus.add_many([("ctl:test", start, 1000), ("ctl:test", start, 1000)])
        jobs = await bus.consume("ctl:test", "orchestrators", "c1", block_ms=1000, count=10)
        assert [m for _, m in jobs] == [start, start]
        await bus.ack("ctl:test", "orchestrators", [i for i, _ in jobs])
        pending = await bus.redis.xpending("ctl:test", "orchestrators")
        assert pending["pending"] == 0
        # the epoch gate workers publish through
        await bus.redis.set("epoch:test", 2)
        assert await bus.add_if_epoch("epoch:test", 1, "out:test", sent, 100) is None
        assert await bus.add_if_epoch("epoch:test", 2, "out:test", sent, 100) is not None
        assert await bus.epoch("epoch:test") == 2
    finally:
        await bus.close()


async def test_blocking_read_wakes_on_publish(redis_url: str) -> None:
    """A consumer blocked in XREAD on the container's Redis gets an entry published meanwhile."""
    import asyncio

    reader, writer = Bus(redis_url, socket_timeout=10), Bus(redis_url, socket_timeout=10)
    try:
        waiting = asyncio.create_task(reader.read({"out:wake": "$"}, block_ms=5000))
        await asyncio.sleep(0.2)
        msg = Command({"type": "ping"}, time.time())
        await writer.add("out:wake", msg)
        got = await asyncio.wait_for(waiting, 5)
        assert [m for _, _, m in got] == [msg]
    finally:
        await reader.close()
        await writer.close()
