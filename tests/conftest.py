"""Fixtures every suite shares: a real Redis, and a fresh Bus per test on a flushed database.

The Redis is a container started with testcontainers from the project's own image
(`jarvis/redis`, built by `make images` / `.ci/docker.sh`), one per test session, whenever a
Docker engine is reachable and the image is there; otherwise a `redis-server` started on a
free loopback port. The test log says which (header of the summary: "integration Redis")."""

from __future__ import annotations

import logging
import os

import pytest

from jarvis.redis_server import RedisServer

log = logging.getLogger("tests")

# containers publish their ports on loopback only, so testcontainers must reach them there (in a
# sandbox it would otherwise pick the bridge's gateway address); read when testcontainers loads
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

REDIS_IMAGE = f"jarvis/redis:{os.environ.get('JARVIS_TAG', 'latest')}"
_which_redis: list[str] = []


def _testcontainers_redis() -> tuple[object | None, str]:
    """A started Redis container, or None and the reason there is none (fails fast)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - no engine: fall back
        return None, f"no Docker engine ({type(exc).__name__})"
    image = os.environ.get("JARVIS_TEST_REDIS_IMAGE", REDIS_IMAGE)
    try:
        client.images.get(image)
    except Exception:  # noqa: BLE001 - no image locally and nothing can be pulled here
        return None, f"no local image {image} (make images)"
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.redis import RedisContainer

    container = RedisContainer(image)
    container.ports["6379"] = ("127.0.0.1",)  # published on loopback only, on a free port
    container.start()
    return container, image


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest):
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    container, why = _testcontainers_redis()
    if container is not None:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        _which_redis.append(f"testcontainers {why} at {host}:{port}")
        if reporter:
            reporter.write_line(f"integration Redis: {_which_redis[-1]}")
        try:
            yield f"redis://{host}:{port}/0"
        finally:
            container.stop()
        return
    with RedisServer() as server:
        _which_redis.append(f"embedded redis-server at {server.url} ({why})")
        if reporter:
            reporter.write_line(f"integration Redis: {_which_redis[-1]}")
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster_url():
    """A local 3-master Redis Cluster (jarvis/redis_topologies.py), its redis+cluster:// URL."""
    from jarvis.redis_topologies import redis_cluster

    with redis_cluster() as url:
        yield url


@pytest.fixture(params=["single", "cluster"])
def topology_url(request: pytest.FixtureRequest) -> str:
    """The Redis URL of each topology a test runs on, flushed: one instance, then a Cluster."""
    from jarvis.redis_topologies import flush

    url = request.getfixturevalue("redis_url" if request.param == "single" else "redis_cluster_url")
    flush(url)
    return url


def pytest_terminal_summary(terminalreporter) -> None:
    for line in _which_redis:
        terminalreporter.write_line(f"integration Redis: {line}")


@pytest.fixture
async def bus(redis_url):
    from shared.bus import Bus

    b = Bus(redis_url, socket_timeout=10)
    await b.redis.flushdb()
    try:
        yield b
    finally:
        await b.close()
