"""The planner executing plans against a SimulatedGpu and the simulated runtime."""

from __future__ import annotations

import asyncio

import pytest

from services.resource.planner import Busy, InUse, ModelFailed
from services.resource.policy import UnknownModel, WontFit
from services.resource.progress import Progress
from tests.unit.resource.helpers import make_sim, sim_model


async def test_ensure_starts_in_order_and_reports_progress():
    sim = make_sim(
        {
            "stt": sim_model(1000, start_s=0.05, reload_cost_s=2),
            "llm": sim_model(4000, start_s=0.05, reload_cost_s=8),
        }
    )
    seen: list[Progress] = []

    async def sink(p: Progress) -> None:
        seen.append(p)

    res = await sim.planner.ensure(["stt", "llm"], "turn", "turn-1", progress=sink)
    assert res.started == ["stt", "llm"]
    assert sim.runtime.starts == ["stt", "llm"]
    assert set(sim.planner.residents) == {"stt", "llm"}
    assert sim.planner.holds.holders_of("llm") == ["turn-1"]
    states = [(p.model, p.state) for p in seen]
    assert states[:2] == [("stt", "queued"), ("llm", "queued")]
    assert ("stt", "starting") in states and ("stt", "ready") in states and ("llm", "ready") in states
    first_llm_queued = next(p for p in seen if p.model == "llm")
    assert first_llm_queued.eta_s == pytest.approx(10, abs=0.5)  # behind stt's 2 s + its own 8 s
    assert all(0.0 <= p.progress <= 1.0 for p in seen)
    assert seen[-1].state == "ready" and seen[-1].progress == 1.0
    assert sim.gpu.info_now().used_mib == 5000


async def test_resident_models_are_a_no_op():
    sim = make_sim({"a": sim_model(1000)})
    await sim.planner.ensure(["a"])
    res = await sim.planner.ensure(["a"])
    assert res.started == [] and sim.runtime.starts == ["a"]


async def test_evicts_idle_lru_and_waits_for_release():
    sim = make_sim(
        {"a": sim_model(4000, release_s=0.1), "b": sim_model(4000, release_s=0.1), "c": sim_model(4000)},
        total_mib=9000,
    )
    await sim.planner.ensure(["a"], "prewarm")
    sim.clock.advance(1)
    await sim.planner.ensure(["b"], "prewarm")
    sim.clock.advance(1)
    sim.planner.acquire("t", ["a"])  # a used more recently than b
    sim.planner.release("t")
    res = await sim.planner.ensure(["c"])
    assert res.evicted == ["b"]
    assert set(sim.planner.residents) == {"a", "c"}
    assert sim.gpu.overcommits == []


async def test_held_model_is_never_evicted_busy_then_proceeds_after_release():
    sim = make_sim({"a": sim_model(6000), "b": sim_model(6000)}, total_mib=10000, busy_wait_s=0.0)
    await sim.planner.ensure(["a"], "turn", "turn-1")
    with pytest.raises(Busy, match="a is released"):
        await sim.planner.ensure(["b"], "prewarm")
    assert "a" in sim.planner.residents

    sim.planner.settings.busy_wait_s = 5.0

    async def release_soon() -> None:
        await asyncio.sleep(0.1)
        sim.planner.release("turn-1")

    t = asyncio.create_task(release_soon())
    res = await sim.planner.ensure(["b"], "turn", "turn-2")
    await t
    assert res.evicted == ["a"] and set(sim.planner.residents) == {"b"}


async def test_wont_fit_is_raised_before_anything_is_touched():
    sim = make_sim(
        {"s": sim_model(3000, sticky=True), "big": sim_model(8000), "x": sim_model(500)},
        total_mib=10000,
        foreign_mib=500,
        reserve_mib=256,
    )
    await sim.planner.ensure(["s", "x"])
    with pytest.raises(WontFit) as ei:
        await sim.planner.ensure(["big"])
    e = ei.value
    # 10000 - 500 foreign - 3000 sticky - 256 reserve = 6244 (x can go)
    assert e.need_mib == 8000 and e.max_free_mib == 6244 and e.shortfall_mib == 1756
    assert "short by 1756 MiB" in str(e)
    assert set(sim.planner.residents) == {"s", "x"}  # nothing evicted in vain


async def test_unknown_model():
    sim = make_sim({"a": sim_model(1)})
    with pytest.raises(UnknownModel):
        await sim.planner.ensure(["a", "zzz"])


async def test_foreign_usage_is_respected():
    sim = make_sim({"a": sim_model(3000), "b": sim_model(3000)}, total_mib=8000)
    await sim.planner.ensure(["a"])
    sim.gpu.set_foreign(3000)  # someone else took memory meanwhile
    res = await sim.planner.ensure(["b"])
    assert res.evicted == ["a"] and sim.gpu.overcommits == []


async def test_lazy_growth_is_reserved():
    # a takes 25% at ready and grows later: the planner must keep the rest for it
    sim = make_sim({"a": sim_model(4000, ready_fraction=0.25), "b": sim_model(5000)}, total_mib=8500)
    await sim.planner.ensure(["a"], "turn", "h")
    with pytest.raises(Busy):
        await sim.planner.ensure(["b"])  # would fit in NVML's free now, but not once a grows
    sim.runtime.grow("a")
    assert sim.gpu.overcommits == []


async def test_start_failure_frees_everything():
    sim = make_sim({"bad": sim_model(2000, fail=True)}, health_timeout_s=0.05)
    with pytest.raises(ModelFailed):
        await sim.planner.ensure(["bad"])
    assert sim.planner.residents == {} and sim.gpu.info_now().used_mib == 0
    assert ("bad", "failed") in [(m, s) for m, s, _ in sim.events]


async def test_turn_goes_before_queued_prewarm():
    sim = make_sim({"slow": sim_model(100, start_s=0.2), "p": sim_model(100), "t": sim_model(100)})
    first = asyncio.create_task(sim.planner.ensure(["slow"], "prewarm"))
    await asyncio.sleep(0.05)
    pre = asyncio.create_task(sim.planner.ensure(["p"], "prewarm"))
    await asyncio.sleep(0.01)
    turn = asyncio.create_task(sim.planner.ensure(["t"], "turn", "h"))
    await asyncio.gather(first, pre, turn)
    assert sim.runtime.starts == ["slow", "t", "p"]


async def test_keep_alive_expiry_and_sticky():
    sim = make_sim(
        {
            "a": sim_model(100, keep_alive_s=10),
            "s": sim_model(100, sticky=True, keep_alive_s=0),
            "n": sim_model(100, keep_alive_s=-1),
        }
    )
    await sim.planner.ensure(["a", "s", "n"], "turn", "h")
    sim.clock.advance(50)
    assert await sim.housekeeper.expire_idle() == []  # held (the hold lives 60 s)
    sim.planner.release("h")
    sim.clock.advance(9)
    assert await sim.housekeeper.expire_idle() == []
    sim.clock.advance(2)
    assert await sim.housekeeper.expire_idle() == ["a"]
    sim.clock.advance(10_000)
    assert await sim.housekeeper.expire_idle() == []
    assert set(sim.planner.residents) == {"s", "n"}


async def test_holds_expire_so_a_dead_orchestrator_cannot_pin_forever():
    sim = make_sim({"a": sim_model(6000), "b": sim_model(6000)}, total_mib=10000, hold_ttl_s=30)
    await sim.planner.ensure(["a"], "turn", "dead-orchestrator")
    sim.clock.advance(31)
    assert sim.housekeeper.expire_holders() == ["dead-orchestrator"]
    res = await sim.planner.ensure(["b"])
    assert res.evicted == ["a"]


async def test_renew_keeps_the_hold():
    sim = make_sim({"a": sim_model(10)}, hold_ttl_s=30)
    await sim.planner.ensure(["a"], "turn", "h")
    sim.clock.advance(20)
    assert sim.planner.renew("h")
    sim.clock.advance(20)
    assert sim.housekeeper.expire_holders() == [] and sim.planner.holds.is_held("a")


async def test_dead_held_model_is_restarted_idle_one_reported():
    sim = make_sim({"held": sim_model(100), "idle": sim_model(100)})
    await sim.planner.ensure(["held"], "turn", "h")
    await sim.planner.ensure(["idle"])
    sim.runtime.kill("held")
    sim.runtime.kill("idle")
    dead = await sim.housekeeper.check_health()
    assert sorted(dead) == ["held", "idle"]
    await asyncio.gather(*sim.planner.tasks)
    assert set(sim.planner.residents) == {"held"}
    assert sim.runtime.starts.count("held") == 2
    assert any(m == "idle" and s == "failed" and "not restarted" in msg for m, s, msg in sim.events)
    assert any(m == "held" and s == "restarting" for m, s, _ in sim.events)


async def test_restarts_are_bounded():
    sim = make_sim({"a": sim_model(100, sticky=True)}, max_restarts=2)
    await sim.planner.ensure(["a"])
    for _ in range(3):
        sim.runtime.kill("a")
        await sim.housekeeper.check_health()
        await asyncio.gather(*sim.planner.tasks)
    assert sim.runtime.starts.count("a") == 3
    assert "a" not in sim.planner.residents
    assert any("gave up" in msg for _, _, msg in sim.events)


async def test_unload_refuses_held_unless_forced():
    sim = make_sim({"a": sim_model(100)})
    await sim.planner.ensure(["a"], "turn", "h")
    with pytest.raises(InUse):
        await sim.planner.unload("a")
    assert await sim.planner.unload("a", force=True)
    assert not await sim.planner.unload("a")


async def test_status_reports_gpu_residents_and_holders():
    sim = make_sim({"a": sim_model(1000, group="speech")}, total_mib=8000, foreign_mib=100, reserve_mib=50)
    await sim.planner.ensure(["a"], "turn", "h")
    st = await sim.planner.status()
    assert st["gpus"][0]["total_mib"] == 8000 and st["gpus"][0]["available_mib"] == 8000 - 1100 - 50
    assert st["residents"][0]["model"] == "a" and st["residents"][0]["held_by"] == ["h"]
    assert st["holders"][0]["holder"] == "h" and st["models"]["a"]["group"] == "speech"


async def test_swap_group_in_execution():
    sim = make_sim(
        {"v1": sim_model(100, group="voices"), "v2": sim_model(100, group="voices")},
        groups={"voices": {"swap": True}},
    )
    await sim.planner.ensure(["v1"])
    res = await sim.planner.ensure(["v2"])
    assert res.evicted == ["v1"] and set(sim.planner.residents) == {"v2"}


async def test_cancelled_ensure_leaves_no_half_started_server():
    sim = make_sim({"slow": sim_model(1000, start_s=5)})
    t = asyncio.create_task(sim.planner.ensure(["slow"]))
    await asyncio.sleep(0.05)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert sim.planner.residents == {} and sim.gpu.info_now().used_mib == 0
    assert not sim.planner.lock(0).locked()


async def test_queued_eta_includes_the_request_ahead():
    sim = make_sim(
        {"slow": sim_model(100, start_s=0.3, reload_cost_s=5), "t": sim_model(100, reload_cost_s=1)}
    )
    seen: list[Progress] = []

    async def sink(p: Progress) -> None:
        seen.append(p)

    first = asyncio.create_task(sim.planner.ensure(["slow"], "prewarm"))
    await asyncio.sleep(0.05)
    await sim.planner.ensure(["t"], "turn", "h", progress=sink)
    await first
    queued = seen[0]
    assert queued.state == "queued" and queued.eta_s == pytest.approx(6, abs=0.3)


async def test_adopts_healthy_leftovers_and_removes_unknown_ones():
    sim = make_sim({"a": sim_model(1000)})
    from services.resource.config import SimulatedSpec

    # a previous run left "a" and a model the registry no longer knows
    left_a = await sim.runtime.start("a", SimulatedSpec(), 0)
    left_x = await sim.runtime.start("gone", SimulatedSpec(), 0)
    sim.runtime.leftovers = [left_a, left_x]
    assert await sim.housekeeper.adopt_existing() == ["a"]
    assert sim.planner.residents["a"].state == "ready" and sim.planner.residents["a"].pending_mib == 0
    assert sim.runtime.running() == ["a"]
    res = await sim.planner.ensure(["a"])
    assert res.started == []


async def test_preload_starts_preload_models():
    sim = make_sim({"p": sim_model(100, preload=True), "q": sim_model(100)})
    await sim.housekeeper.preload()
    assert set(sim.planner.residents) == {"p"}
