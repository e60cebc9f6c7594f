"""The sleep tier: idle sleep-capable servers are put to sleep instead of stopped (host RAM
permitting), what a sleeping server still holds is measured and counted, a request wakes it
(no cold start) and warms it up; `jarvis models status` shows sleeping models and their memory."""

from __future__ import annotations

import pytest

from services.resource.config import ProcessSpec
from services.resource.runtimes.base import Handle
from services.resource.runtimes.process import ProcessRuntime
from tests.support.fake_openai import FakeOpenAI
from tests.unit.resource.helpers import make_sim, sim_model


def sleepy(footprint: int, held_est: int = 1000, held_real: int = 1000, host: int = 0, **kw) -> dict:
    return sim_model(
        footprint,
        sleep={"held_mib": held_est, "host_mib": host, "wake_s": 0.5},
        sleep_held_mib=held_real,
        **kw,
    )


async def test_eviction_puts_a_sleepable_model_to_sleep_and_counts_what_it_holds():
    sim = make_sim({"llm": sleepy(6000, held_real=1200), "vlm": sim_model(6000)}, total_mib=10000)
    await sim.planner.ensure(["llm"])
    res = await sim.planner.ensure(["vlm"])
    assert res.slept == ["llm"] and res.evicted == []
    assert sim.runtime.sleeping() == ["llm"] and sim.runtime.stops == []
    assert sim.gpu.info_now().used_mib == 1200 + 6000
    r = sim.planner.residents["llm"]
    assert r.state == "sleeping" and r.observed_mib == 1200  # measured, not the 1000 estimate
    st = await sim.planner.status()
    row = next(x for x in st["residents"] if x["model"] == "llm")
    assert row["sleeping"] and row["held_mib"] == 1200
    assert st["gpus"][0]["sleeping_held_mib"] == 1200
    assert sim.gpu.overcommits == []


async def test_a_request_wakes_the_sleeper_instead_of_a_cold_start():
    sim = make_sim({"llm": sleepy(6000), "vlm": sim_model(6000)}, total_mib=10000)
    await sim.planner.ensure(["llm"])
    await sim.planner.ensure(["vlm"])
    res = await sim.planner.ensure(["llm"], "turn", "t1")
    assert res.woken == ["llm"] and res.started == []
    assert sim.runtime.starts == ["llm", "vlm"] and sim.runtime.wakes == ["llm"]
    assert res.evicted == ["vlm"]  # 1000 held + 6000 awake would not fit beside vlm's 6000
    assert sim.planner.residents["llm"].state == "ready" and sim.gpu.info_now().used_mib == 6000
    assert sim.gpu.overcommits == []


async def test_without_host_ram_for_the_weights_it_stops_instead():
    sim = make_sim(
        {"llm": sleepy(6000, host=5000), "vlm": sim_model(6000)},
        total_mib=10000,
        host_mib=5000,
        host_reserve_mib=1024,
    )
    await sim.planner.ensure(["llm"])
    res = await sim.planner.ensure(["vlm"])
    assert res.evicted == ["llm"] and res.slept == [] and "llm" not in sim.planner.residents


async def test_held_memory_is_never_assumed_zero_and_a_sleeper_is_stopped_when_its_held_memory_is_needed():
    sim = make_sim(
        {"llm": sleepy(6000, held_est=500, held_real=3000), "big": sim_model(8000)}, total_mib=10000
    )
    await sim.planner.ensure(["llm"])
    res = await sim.planner.ensure(["big"])
    # sleeping would leave 3000 held: 7000 free < 8000, so the planner stops it after measuring
    assert "llm" not in sim.planner.residents and "big" in sim.planner.residents
    assert sim.gpu.overcommits == [] and res.evicted == ["llm"]


async def test_keep_alive_sleeps_first_and_stops_after_a_second_keep_alive():
    sim = make_sim({"llm": sleepy(6000, keep_alive_s=10)}, total_mib=10000)
    await sim.planner.ensure(["llm"])
    sim.clock.advance(11)
    assert await sim.housekeeper.expire_idle() == []
    assert sim.planner.residents["llm"].state == "sleeping"
    sim.clock.advance(11)
    assert await sim.housekeeper.expire_idle() == ["llm"]
    assert sim.planner.residents == {} and sim.gpu.info_now().used_mib == 0


async def test_the_eta_of_a_wake_is_its_wake_time_not_a_cold_start():
    sim = make_sim({"llm": sleepy(6000, reload_cost_s=60), "vlm": sim_model(6000)}, total_mib=10000)
    await sim.planner.ensure(["llm"])
    await sim.planner.ensure(["vlm"])
    seen = []

    async def sink(p):
        seen.append(p)

    await sim.planner.ensure(["llm"], progress=sink)
    assert seen[0].state == "queued" and seen[0].eta_s == pytest.approx(0.5)


# ---- over HTTP: vLLM's endpoints -----------------------------------------------------


async def test_http_sleep_wake_and_one_token_warm_up_against_vllms_endpoints(tmp_path):
    argv = ["--model", "m", "--served-model-name", "jarvis-llm", "--enable-sleep-mode"]
    with FakeOpenAI.like_vllm(argv, {"VLLM_SERVER_DEV_MODE": "1"}) as api:
        rt = ProcessRuntime(tmp_path)
        spec = ProcessSpec(argv=["true"], health_url=f"http://127.0.0.1:{api.port}/health")
        h = Handle("llm", "process", "1")
        await rt.sleep(h, spec, 1)
        assert api.sleeping == 1 and api.sleeps == [1]
        await rt.wake(h, spec)
        assert api.sleeping == 0 and api.wakes == 1
        warm = api.requests[-1]
        assert warm["max_tokens"] == 1 and warm["model"] == "jarvis-llm"
        assert ("POST", "/sleep") in api.paths and ("POST", "/wake_up") in api.paths
