"""Constants and helpers of the container suite (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "compose.yaml"
TAG = os.environ.get("JARVIS_TAG", "latest")
REDIS_IMAGE = f"jarvis/redis:{TAG}"
CORE_IMAGE = f"jarvis/core:{TAG}"
HOW = "run `make images` or `docker/build.sh stub` (.ci/docker.sh does it in CI)"


def require_images(client, *images: str) -> None:
    """Skip unless every image exists in the engine (nothing is ever pulled)."""
    import docker

    missing = []
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        pytest.skip(f"image(s) {', '.join(missing)} not built here; {HOW}")


def compose_available() -> str | None:
    """None when `docker compose` (v2) works, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        out = subprocess.run(
            ["docker", "compose", "version"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker compose version` failed: {exc}"
    if out.returncode != 0:
        return f"no Compose v2 plugin (`docker compose version`: {out.stderr.strip()[:200]})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
