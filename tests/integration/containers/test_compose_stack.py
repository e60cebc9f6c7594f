"""The whole stack under `docker compose --profile stub`: one spoken turn through it.

Brings the stub profile up from the locally built images (never builds or pulls here) under
a project name of its own with the gateway on a free port, speaks a WAV made with espeak-ng
into it with `jarvis.talk.talk()` (the `jarvis talk` client), and checks the events and the
reply audio. `docker compose down -v` runs whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid

import pytest

from jarvis.talk import talk
from tests.support.speech import concat, have_espeak, silence, speak, write_wav

from .helpers import CORE_IMAGE, REDIS_IMAGE, free_port, require_images

pytestmark = pytest.mark.docker

UP_TIMEOUT_S = 180


class Stack:
    def __init__(self, cli: list[str], project: str, port: int) -> None:
        self.cli = [*cli, "-p", project, "--profile", "stub"]
        self.project = project
        self.port = port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        # health checks every 2 s: `up --wait` returns soon after the services are ready
        self.env.update(
            JARVIS_PUBLISH_HOST="127.0.0.1", JARVIS_PUBLISH_PORT=str(port), JARVIS_HEALTH_INTERVAL="2s"
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [*self.cli, *args], check=False, capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {out.returncode}:\n"
                f"{out.stderr[-3000:]}\n{self.logs()}"
            )
        return out

    def logs(self) -> str:
        try:
            out = subprocess.run(
                [*self.cli, "logs", "--no-color", "--tail", "40"],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
                env=self.env,
            )
            return "---- service logs ----\n" + out.stdout[-8000:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"(no logs: {exc})"

    def ps(self) -> list[dict]:
        out = self.compose("ps", "--all", "--format", "json")
        text = out.stdout.strip()
        if text.startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def stub_stack(docker_client, compose_cli):
    require_images(docker_client, REDIS_IMAGE, CORE_IMAGE)
    stack = Stack(compose_cli, f"jarvis-test-{uuid.uuid4().hex[:8]}", free_port())
    try:
        stack.compose(
            "up",
            "--detach",
            "--wait",
            "--wait-timeout",
            str(UP_TIMEOUT_S),
            "--no-build",
            "--pull",
            "never",
            timeout=UP_TIMEOUT_S + 60,
        )
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=120, check=False)


def test_every_service_is_healthy(stub_stack: Stack, docker_client) -> None:
    states = {c["Service"]: (c["State"], c.get("Health", "")) for c in stub_stack.ps()}
    assert set(states) == {"redis", "gateway", "orchestrator", "stt-stub", "llm-stub", "vlm-stub", "tts-stub"}
    assert all(s == ("running", "healthy") for s in states.values()), states
    # the Jarvis services run as the unprivileged user
    gateway = docker_client.containers.get(f"{stub_stack.project}-gateway-1")
    assert gateway.attrs["Config"]["User"] == "jarvis"
    code, out = gateway.exec_run(["id", "-u"])
    assert code == 0 and out.decode().strip() != "0"


def test_gateway_healthz_is_published(stub_stack: Stack) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{stub_stack.port}/healthz", timeout=5) as r:
        assert r.status == 200
        assert r.read().strip() == b"ok"


@pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech (make sysdeps)")
async def test_spoken_turn(stub_stack: Stack, tmp_path) -> None:
    wav = write_wav(
        tmp_path / "question.wav", concat(silence(0.3), speak("what time is it in Paris"), silence(1.0))
    )
    res = await talk(stub_stack.url, wav=wav, timeout=60, quiet=True)
    kinds = [e["type"] for e in res.events]
    assert res.session_id, kinds
    errors = res.of("error")
    assert not errors, errors

    finals = [e for e in res.of("transcript") if e.get("final")]
    assert len(finals) == 1 and finals[0]["text"].strip(), res.of("transcript")
    replies = [e for e in res.of("reply") if e.get("final")]
    assert replies and replies[-1].get("text", "").strip(), res.of("reply")

    assert res.of("audio_start") and res.of("audio_end"), kinds
    assert kinds.index("audio_start") < kinds.index("audio_end")
    assert res.sample_rate > 0
    assert len(res.audio) > res.sample_rate * 2 * 0.1, "less than 0.1 s of reply audio"  # PCM16

    (metrics,) = res.of("metrics")
    for key in ("end_of_turn_ms", "transcript_ms", "first_token_ms", "first_audio_ms", "total_ms"):
        assert isinstance(metrics.get(key), (int, float)) and metrics[key] >= 0, (key, metrics)
    assert (
        metrics["end_of_turn_ms"]
        <= metrics["transcript_ms"]
        <= metrics["first_audio_ms"]
        <= metrics["total_ms"]
    )
    states = [e["state"] for e in res.of("state")]
    assert "THINKING" in states and "SPEAKING" in states, states
