"""Fixtures every suite shares: a real Redis (testcontainers when a Docker engine and a
Redis image are at hand, else a `redis-server` started on a free loopback port), and
a fresh Bus per test on a flushed database."""

from __future__ import annotations

import logging
import os

import pytest

from jarvis.redis_server import RedisServer

log = logging.getLogger("tests")


def _testcontainers_redis():
    """A Redis container, or None when no engine or image is available (fast failure)."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # noqa: BLE001 - no engine: fall back
        return None
    image = os.environ.get("JARVIS_TEST_REDIS_IMAGE", "local/jarvis-redis:latest")
    try:
        client = docker.from_env(timeout=3)
        client.images.get(image)
    except Exception:  # noqa: BLE001 - no image locally and nothing can be pulled here
        return None
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.redis import RedisContainer

    container = RedisContainer(image)
    container.start()
    return container


@pytest.fixture(scope="session")
def redis_url():
    container = _testcontainers_redis()
    if container is not None:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        try:
            yield f"redis://{host}:{port}/0"
        finally:
            container.stop()
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
async def bus(redis_url):
    from shared.bus import Bus

    b = Bus(redis_url, socket_timeout=10)
    await b.redis.flushdb()
    try:
        yield b
    finally:
        await b.close()
