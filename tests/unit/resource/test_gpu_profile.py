"""The GPU profile as shipped, checked against what its servers accept (issue: "the GPU profile
must work the first time").

The registry's vLLM command line is turned into a test double that refuses what that vLLM
would refuse (tests/support/fake_openai.py: vLLM's status codes and error bodies), and the
LLM client, configured as the GPU profile configures it, must get a reply from it.
Numbered as the problems they guard against:
1. tools on by default, vLLM started without the tool-call flags: HTTP 400 on every turn;
2. a model name the server does not serve (404) and a port that collides with a user's vLLM;
4. `--gpu-memory-utilization` is a fraction of the card's total, so it must follow the card;
   two servers must start one at a time.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from services.llm.config import LlmSettings
from services.llm.openai_chat import LlmUnavailable, OpenAIChat
from services.resource.config import (
    DEFAULT_REGISTRY,
    LLM_CONTAINER_PORT,
    LLM_HOST_PORT,
    LLM_SERVED_NAME,
    VLLM_IMAGE,
    Registry,
)
from services.resource.runtimes.base import render, start_values
from shared.config import Settings
from shared.model import LlmDelta, LlmRequest
from tests.support.fake_openai import FakeOpenAI
from tests.unit.resource.helpers import make_sim, sim_model

ROOT = Path(__file__).resolve().parents[3]
H200_MIB = 143771  # what NVML reports for an H200's total memory


def registry_llm() -> tuple[list[str], dict[str, str]]:
    spec = Registry.model_validate(DEFAULT_REGISTRY).models["llm"].runtime
    assert spec.kind == "docker"
    argv = render(spec.command, start_values(11000, H200_MIB, 0))
    assert isinstance(argv, list)
    return argv, dict(spec.env)


async def reply(api: FakeOpenAI, **settings: object) -> str:
    chat = OpenAIChat(LlmSettings(base_url=api.url, **settings))
    await chat.load()
    try:
        out = [
            d.text
            async for d in chat.infer(LlmRequest(messages=[{"role": "user", "content": "Hi"}]))
            if isinstance(d, LlmDelta)
        ]
    finally:
        await chat.unload()
    return "".join(out)


# ---- 1. tools --------------------------------------------------------------------


def test_the_registry_vllm_has_the_tool_flags_the_llm_setting_needs():
    argv, _ = registry_llm()
    settings = LlmSettings(_env_file=None)
    assert settings.tools_enabled and settings.tool_choice == "auto"  # the default the worker runs
    assert "--enable-auto-tool-choice" in argv
    parser = argv[argv.index("--tool-call-parser") + 1]
    assert parser == "hermes"  # Qwen2.5's tool-call format


async def test_the_gpu_profile_llm_client_gets_a_reply_from_the_registry_vllm():
    argv, env = registry_llm()
    with FakeOpenAI.like_vllm(argv, env, reply="Paris.") as api:
        assert await reply(api) == "Paris."
        sent = api.requests[-1]
        assert sent["tools"] and sent["tool_choice"] == "auto" and sent["model"] == LLM_SERVED_NAME


async def test_without_the_tool_flags_vllm_refuses_every_turn():
    """What the shipped registry did: the double answers as vLLM does."""
    argv = [
        a for a in registry_llm()[0] if a not in ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
    ]
    with FakeOpenAI.like_vllm(argv) as api:
        with pytest.raises(LlmUnavailable) as err:
            await reply(api)
        assert err.value.status == 400
        assert '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser' in str(
            err.value
        )
        assert await reply(api, tools_enabled=False) == api.reply  # without tools it answers


# ---- 2. model name and port ------------------------------------------------------


async def test_an_unknown_model_name_is_a_404_with_vllms_body():
    argv, env = registry_llm()
    with FakeOpenAI.like_vllm(argv, env) as api:
        with pytest.raises(LlmUnavailable) as err:
            await reply(api, model="meta-llama/Llama-3.1-8B-Instruct")
        assert err.value.status == 404
        assert "The model `meta-llama/Llama-3.1-8B-Instruct` does not exist." in str(err.value)


def test_the_readme_names_no_model_the_registry_does_not_serve():
    readme = (ROOT / "README.md").read_text()
    gpu = readme[readme.index("## GPU profile") :]
    gpu = gpu[: gpu.index("\n## ", 3)]
    for name in re.findall(r"JARVIS_LLM_MODEL=(\S+)", gpu):
        assert name == LLM_SERVED_NAME, f"README's GPU profile sets JARVIS_LLM_MODEL={name}"


def test_the_gpu_profile_points_the_llm_worker_at_the_registry_vllm_not_port_8000(monkeypatch):
    monkeypatch.delenv("JARVIS_LLM_BASE_URL", raising=False)
    monkeypatch.setenv("JARVIS_PROFILE", "gpu")
    spec = Registry.model_validate(DEFAULT_REGISTRY).models["llm"].runtime
    assert spec.ports == {f"{LLM_CONTAINER_PORT}/tcp": LLM_HOST_PORT} and LLM_HOST_PORT != 8000
    assert LlmSettings().base_url == f"http://127.0.0.1:{LLM_HOST_PORT}/v1"
    monkeypatch.setenv("JARVIS_PROFILE", "cpu")
    assert LlmSettings().base_url == "http://127.0.0.1:8080/v1"


def test_the_vllm_image_is_pinned_and_compose_uses_the_same():
    assert not VLLM_IMAGE.endswith(":latest") and re.search(r":v\d+\.\d+\.\d+$", VLLM_IMAGE)
    compose = (ROOT / "compose.yaml").read_text()
    assert "vllm/vllm-openai:latest" not in compose


# ---- context length -----------------------------------------------------------------


async def test_a_context_overflow_is_a_400_with_vllms_wording():
    argv, env = registry_llm()
    argv[argv.index("--max-model-len") + 1] = "300"
    with FakeOpenAI.like_vllm(argv, env) as api:
        with pytest.raises(LlmUnavailable) as err:
            await reply(api, max_tokens=256)
        assert err.value.status == 400
        assert "This model's maximum context length is 300 tokens." in str(err.value)


def test_the_default_history_and_reply_fit_the_registry_context():
    """History window x a long spoken turn + the reply budget + the tools stay under --max-model-len."""
    argv, _ = registry_llm()
    max_len = int(argv[argv.index("--max-model-len") + 1])
    s = LlmSettings()
    # the orchestrator's window (the client's cap sits above it) plus the question; 200 tokens
    # a message, the prompt and the tool schemas 2000
    worst = (Settings().history_window + 1) * 200 + s.max_tokens + 2000
    assert worst <= max_len


# ---- 4. utilization and one start at a time -------------------------------------------


@pytest.mark.parametrize(("total", "footprint"), [(H200_MIB, 11000), (24576, 11000), (81559, 20000)])
def test_gpu_memory_utilization_is_the_footprint_share_of_this_card(total, footprint):
    values = start_values(footprint, total, 0)
    frac = float(values["gpu_memory_utilization"])
    assert frac * total <= footprint < (frac + 0.002) * total


async def test_the_planner_fills_in_the_utilization_for_the_device_it_starts_on():
    sim = make_sim({"llm": sim_model(11000)}, total_mib=H200_MIB)
    await sim.planner.ensure(["llm"])
    assert sim.runtime.started_with["llm"]["gpu_memory_utilization"] == "0.076"


async def test_servers_start_one_at_a_time():
    sim = make_sim({"a": sim_model(1000, start_s=0.05), "b": sim_model(1000, start_s=0.05)})
    starting: list[int] = []
    live = 0
    orig = sim.runtime.wait_healthy

    async def counted(*args: object, **kw: object) -> None:
        nonlocal live
        live += 1
        starting.append(live)
        try:
            await orig(*args, **kw)
        finally:
            live -= 1

    sim.runtime.wait_healthy = counted  # type: ignore[method-assign]
    await asyncio.gather(sim.planner.ensure(["a"]), sim.planner.ensure(["b"]), sim.planner.ensure(["a", "b"]))
    assert max(starting) == 1 and set(sim.runtime.starts) == {"a", "b"}
