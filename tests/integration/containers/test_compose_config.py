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
    "gpu": {"redis", "gateway", "orchestrator", "resource", "llm-gpu"},
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


@pytest.mark.parametrize("profile", ["stub", "cpu", "gpu", "resource", "vlm", "gpu-image"])
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
    # the gateway reads the session files (a resume secret Redis lost), read only
    gw_vols = {v.get("source"): v for v in gw.get("volumes", [])}
    assert gw_vols["sessions"].get("read_only") is True
    assert (
        gw["environment"]["JARVIS_SESSIONS_DIR"]
        == services["orchestrator"]["environment"]["JARVIS_SESSIONS_DIR"]
    )
    assert "redis-data" in {v.get("source") for v in services["redis"].get("volumes", [])}


def test_cpu_profile_wiring(compose_cli: list[str]) -> None:
    s = config(compose_cli, "cpu")["services"]
    assert s["llm"]["environment"]["JARVIS_LLM_BASE_URL"] == "http://llama-server:8080/v1"
    assert s["llm"]["depends_on"]["llama-server"]["condition"] == "service_healthy"
    for name in ("stt", "tts", "llama-server"):
        assert s[name]["image"].startswith("jarvis/cpu:"), name
    assert s["stt"]["build"]["target"] == "cpu"


def test_gpu_profile_runs_the_models_under_the_resource_service_with_the_gpu_reserved(
    compose_cli: list[str],
) -> None:
    """Problem 3: the resource service reserved no GPU, so NVML failed and it planned against a
    simulated one; now it has the GPU, plans with NVML, and starts every GPU model server."""
    from services.resource.config import LLM_SERVED_NAME, compose_gpu_registry

    s = config(compose_cli, "gpu")["services"]
    res = s["resource"]
    devices = res["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert res["environment"]["JARVIS_RESOURCE_GPU_BACKEND"] == "nvml"
    assert res["environment"]["JARVIS_RESOURCE_REGISTRY_PRESET"] == "compose-gpu"
    assert any(v.get("target") == "/var/run/docker.sock" for v in res["volumes"])
    registry = compose_gpu_registry()
    llm = registry["models"]["llm"]["runtime"]
    assert s["llm-gpu"]["environment"]["JARVIS_LLM_BASE_URL"] == f"http://{llm['name']}:8000/v1"
    assert llm["name"] == LLM_SERVED_NAME and llm["health_url"].startswith("http://container:")
    assert registry["models"]["chatterbox"]["runtime"]["env"]["JARVIS_TTS_ENGINE"] == "chatterbox"
    assert all(m["runtime"]["kind"] == "docker" for m in registry["models"].values())


def test_a_bare_up_runs_a_stack_that_answers(compose_cli: list[str]) -> None:
    """Problem 8: `docker compose up` with no profile started only redis, gateway and orchestrator.
    The checked-in .env sets COMPOSE_PROFILES=cpu."""
    out = subprocess.run(
        [*compose_cli, "config", "--format", "json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)["services"]) == PROFILES["cpu"]


def test_the_gpu_image_has_a_builder(compose_cli: list[str]) -> None:
    s = config(compose_cli, "gpu-image")["services"]
    assert s["gpu-image"]["build"]["target"] == "gpu" and s["gpu-image"]["image"].startswith("jarvis/gpu:")


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
