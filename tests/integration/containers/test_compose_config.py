"""compose.yaml is valid for every profile and wires what each profile needs.

Only the Compose v2 CLI is needed (`docker compose config` never contacts the engine).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.docker

PROFILES = {
    "stub": {"redis", "gateway", "orchestrator", "stt-stub", "llm-stub", "tts-stub", "vlm-stub"},
    "cpu": {"redis", "gateway", "orchestrator", "llama-server", "stt", "llm", "tts"},
    "gpu": {"redis", "gateway", "orchestrator", "vllm", "stt-gpu", "llm-gpu", "tts-gpu"},
}


def _env() -> dict[str, str]:
    # the file's own defaults, not whatever this shell has exported
    return {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "JARVIS_"))}


def config(compose_cli: list[str], *profiles: str) -> dict:
    args = [a for p in profiles for a in ("--profile", p)]
    out = subprocess.run(
        [*compose_cli, *args, "config", "--format", "json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode == 0, f"docker compose {' '.join(args)} config failed:\n{out.stderr}"
    return json.loads(out.stdout)


@pytest.mark.parametrize("profile", ["stub", "cpu", "gpu", "resource", "vlm"])
def test_config_is_valid(compose_cli: list[str], profile: str) -> None:
    out = subprocess.run(
        [*compose_cli, "--profile", profile, "config", "--quiet"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_services(compose_cli: list[str], profile: str) -> None:
    cfg = config(compose_cli, profile)
    services = cfg["services"]
    assert set(services) == PROFILES[profile]
    for name, svc in services.items():
        # everything but redis and the model servers waits for a healthy Redis
        if name not in ("redis", "llama-server", "vllm"):
            assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        # every service has a health check: its own, or the image's with compose's timing
        assert "healthcheck" in svc, name
        assert svc.get("restart") == "unless-stopped", name
    # images are built here, never pulled: exactly one service builds each jarvis image
    builders: dict[str, list[str]] = {}
    for name, svc in services.items():
        if "build" in svc:
            builders.setdefault(svc["image"], []).append(name)
            assert svc["build"]["dockerfile"] == "docker/Dockerfile"
    for name, svc in services.items():
        if svc["image"].startswith("jarvis/"):
            assert svc["image"] in builders, f"{name}: nothing in this profile builds {svc['image']}"
    assert all(len(v) == 1 for v in builders.values()), builders
    gw = services["gateway"]
    assert gw["ports"][0]["target"] == 8765
    assert gw["ports"][0]["host_ip"] == "127.0.0.1"
    assert "sessions" in {v.get("source") for v in services["orchestrator"].get("volumes", [])}
    assert "redis-data" in {v.get("source") for v in services["redis"].get("volumes", [])}


def test_cpu_profile_wiring(compose_cli: list[str]) -> None:
    s = config(compose_cli, "cpu")["services"]
    assert s["llm"]["environment"]["JARVIS_LLM_BASE_URL"] == "http://llama-server:8080/v1"
    assert s["llm"]["depends_on"]["llama-server"]["condition"] == "service_healthy"
    for name in ("stt", "tts", "llama-server"):
        assert s[name]["image"].startswith("jarvis/cpu:"), name
    assert s["stt"]["build"]["target"] == "cpu"


def test_gpu_profile_reserves_nvidia_devices(compose_cli: list[str]) -> None:
    s = config(compose_cli, "gpu")["services"]
    for name in ("vllm", "stt-gpu", "tts-gpu"):
        devices = s[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
    assert s["vllm"]["image"].startswith("vllm/vllm-openai:")
    assert s["llm-gpu"]["environment"]["JARVIS_LLM_BASE_URL"] == "http://vllm:8000/v1"
    assert s["tts-gpu"]["environment"]["JARVIS_TTS_ENGINE"] == "chatterbox"
    assert s["stt-gpu"]["build"]["target"] == "gpu"


def test_resource_service_gets_the_docker_socket(compose_cli: list[str]) -> None:
    s = config(compose_cli, "resource")["services"]["resource"]
    assert any(v.get("target") == "/var/run/docker.sock" for v in s["volumes"])
    assert s["command"] == ["python", "-m", "services.resource"]


def test_build_args_choose_base_images(compose_cli: list[str]) -> None:
    env = {**_env(), "JARVIS_PYTHON_IMAGE": "local/debian:bookworm", "JARVIS_BUILD_CA": "/etc/hostname"}
    out = subprocess.run(
        [*compose_cli, "--profile", "stub", "config", "--format", "json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["services"]["gateway"]["build"]["args"]["PYTHON_IMAGE"] == "local/debian:bookworm"
    assert cfg["secrets"]["ca"]["file"] == "/etc/hostname"
    default = config(compose_cli, "stub")
    assert default["services"]["gateway"]["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert default["secrets"]["ca"]["file"] == "/dev/null"  # no extra CA unless asked for
