"""The Docker runtime against a real engine, when one is reachable.

No registry can be reached here, so the test image is built locally on top of a base image
the engine already has (`JARVIS_TEST_DOCKER_BASE`, else the first of a few usual local
names that exists); the server inside is `python3 -m http.server` or `busybox httpd`.
Without an engine, or without any usable local base image, the tests skip and say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import time
import uuid

import pytest

from services.resource.config import MODEL_LABEL, OWNER_LABEL, DockerSpec
from services.resource.runtimes import StartFailed
from services.resource.runtimes.docker import DockerRuntime

pytestmark = pytest.mark.docker

BASES = [
    "local/debian:bookworm",
    "local/jarvis-redis:latest",
    "python:3.11-slim",
    "python:3.12-slim",
    "debian:bookworm-slim",
    "debian:bookworm",
    "busybox:latest",
    "alpine:latest",
]
TEST_IMAGE = "jarvis-test/resource-http:latest"


def _engine():
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - any failure means: no engine here
        pytest.skip(
            f"no Docker engine reachable (docker.from_env().ping() failed: {exc.__class__.__name__}: {exc})"
        )


def _server_cmd(client, base: str) -> list[str] | None:
    """How to serve HTTP on port 8000 inside `base`, or None."""
    probes = [
        (["python3", "-m", "http.server", "8000"], "command -v python3"),
        (["busybox", "httpd", "-f", "-p", "8000"], "command -v busybox"),
    ]
    for cmd, check in probes:
        try:
            client.containers.run(base, ["sh", "-c", check], remove=True)
            return cmd
        except Exception:  # noqa: BLE001,S112 - not in this image; try the next
            continue
    return None


@pytest.fixture(scope="module")
def engine_image():
    client = _engine()
    wanted = [os.environ["JARVIS_TEST_DOCKER_BASE"]] if os.environ.get("JARVIS_TEST_DOCKER_BASE") else BASES
    import docker

    for base in wanted:
        try:
            client.images.get(base)
        except docker.errors.ImageNotFound:
            continue
        cmd = _server_cmd(client, base)
        if cmd is None:
            continue
        dockerfile = f'FROM {base}\nLABEL jarvis.test="resource"\nCMD {cmd!r}\n'.replace("'", '"')
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=TEST_IMAGE, rm=True, pull=False)
        yield client, TEST_IMAGE
        with contextlib.suppress(Exception):
            client.images.remove(TEST_IMAGE, force=True)
        client.close()
        return
    pytest.skip(
        "no usable local base image to build the test image from (no registry can be reached here); "
        f"tried {', '.join(wanted)}; set JARVIS_TEST_DOCKER_BASE to a local image with python3 or busybox"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def owner(engine_image):
    """A unique owner label; every container with it is removed at teardown."""
    client, _ = engine_image
    owner = f"test-{uuid.uuid4().hex[:8]}"
    yield owner
    for c in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}):
        with contextlib.suppress(Exception):
            c.remove(force=True)


def spec_for(image: str, port: int, owner: str, **kw) -> DockerSpec:
    return DockerSpec(
        image=image,
        ports={"8000/tcp": port},
        gpus=None,
        name=f"jarvis-{owner}-web",
        health_url=f"http://127.0.0.1:{port}/",
        **kw,
    )


async def test_start_health_label_stop(engine_image, owner):
    client, image = engine_image
    rt = DockerRuntime(owner)
    spec = spec_for(image, free_port(), owner)
    h = await rt.start("web", spec, 0)
    try:
        await rt.wait_healthy(h, spec, timeout_s=60, expected_s=2)
        assert await rt.probe(h, spec)
        c = client.containers.get(h.ref)
        assert c.labels[OWNER_LABEL] == owner and c.labels[MODEL_LABEL] == "web"
    finally:
        await rt.stop(h, grace_s=2)
    import docker

    with pytest.raises(docker.errors.NotFound):
        client.containers.get(h.ref)
    await rt.close()


async def test_external_kill_is_detected_and_adoption(engine_image, owner):
    client, image = engine_image
    rt = DockerRuntime(owner)
    spec = spec_for(image, free_port(), owner)
    h = await rt.start("web", spec, 0)
    await rt.wait_healthy(h, spec, timeout_s=60, expected_s=2)

    again = DockerRuntime(owner)  # a restarted resource service
    adopted = await again.adopt()
    assert [(a.model, a.ref, a.adopted) for a in adopted] == [("web", h.ref, True)]

    await asyncio.to_thread(client.containers.get(h.ref).kill)
    deadline = time.monotonic() + 10
    alive = await rt.alive(h)
    while alive and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        alive = await rt.alive(h)
    assert not await rt.alive(h) and not await rt.probe(h, spec)
    assert await again.adopt() == []  # the dead one is removed, not adopted
    await rt.close()
    await again.close()


async def test_health_cmd_and_name_taken_by_a_stranger(engine_image, owner):
    client, image = engine_image
    rt = DockerRuntime(owner)
    spec = DockerSpec(image=image, gpus=None, name=f"jarvis-{owner}-cmd", health_cmd=["true"])
    h = await rt.start("cmd", spec, 0)
    try:
        await rt.wait_healthy(h, spec, timeout_s=60, expected_s=2)
    finally:
        await rt.stop(h, 1)
    stranger = client.containers.run(
        image, detach=True, name=f"jarvis-{owner}-taken", labels={"jarvis.test": owner}
    )
    try:
        with pytest.raises(StartFailed, match="do not own"):
            await rt.start("x", DockerSpec(image=image, gpus=None, name=f"jarvis-{owner}-taken"), 0)
    finally:
        stranger.remove(force=True)
    with pytest.raises(StartFailed, match="not present locally"):
        await rt.start(
            "y", DockerSpec(image="jarvis-test/does-not-exist:nope", gpus=None, name=f"jarvis-{owner}-y"), 0
        )
    await rt.close()
