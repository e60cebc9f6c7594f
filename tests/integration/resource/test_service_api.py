"""The resource service's Redis API against a real Redis: service + ResourceClient.

The planner runs on a SimulatedGpu with the simulated runtime; everything between the
client and the planner (streams, codec, heartbeat, replies) is real.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from services.resource import messages as m
from services.resource.client import BusyError, InUseError, ResourceClient, ResourceGone, WontFitError
from shared.bus import Bus
from tests.integration.resource.conftest import Running


async def collect(agen) -> list[m.ModelProgress]:
    return [p async for p in agen]


async def test_no_service_is_a_no_op(bus: Bus):
    client = ResourceClient(bus)
    t0 = time.monotonic()
    assert await collect(client.ensure(["stt"], "turn", "t")) == []
    assert time.monotonic() - t0 < 1
    await client.release("t")
    assert await client.status() is None


async def test_ensure_progress_hold_release(service: Running, bus: Bus):
    client = ResourceClient(bus)
    assert await client.available()
    progress = await collect(client.ensure(["stt", "llm"], "turn", holder="turn-1"))
    states = [(p.model, p.state) for p in progress]
    assert states[0] == ("stt", "queued")
    for model in ("stt", "llm"):
        seq = [s for mm, s in states if mm == model]
        assert seq[0] == "queued" and "starting" in seq and seq[-1] == "ready"
    llm_queued = next(p for p in progress if p.model == "llm")
    assert llm_queued.eta_s == pytest.approx(6, abs=0.5)
    assert set(service.planner.residents) == {"stt", "llm"}

    st = await client.status()
    assert st is not None and st.service_id == "test-resource"
    held = {r["model"]: r["held_by"] for r in st.residents}
    assert held == {"stt": ["turn-1"], "llm": ["turn-1"]}
    assert st.gpus[0]["total_mib"] == 10000 and st.gpus[0]["used_mib"] == 6000
    assert st.holders[0]["holder"] == "turn-1"

    await client.release("turn-1")
    for _ in range(100):
        st = await client.status()
        if not st.holders:
            break
        await asyncio.sleep(0.02)
    assert st.holders == [] and all(r["held_by"] == [] for r in st.residents)

    # a second ensure of resident models is immediate and silent
    assert await collect(client.ensure(["stt", "llm"], "turn", holder="turn-2")) == []


async def test_eviction_busy_and_wont_fit(service: Running, bus: Bus):
    client = ResourceClient(bus)
    await collect(client.ensure(["llm"], "turn", holder="a"))
    with pytest.raises(BusyError, match="llm"):
        await collect(client.ensure(["vlm"], "turn", holder="b"))  # llm is held by a
    with pytest.raises(WontFitError) as ei:
        await collect(client.ensure(["huge"], "turn"))
    assert "20000 MiB" in str(ei.value) and "short by 10000 MiB" in str(ei.value)
    await client.release("a")
    progress = await collect(client.ensure(["vlm"], "turn", holder="b"))
    assert any(p.state == "evicting" and "llm" in p.message for p in progress)
    assert set(service.planner.residents) == {"vlm"}


async def test_load_unload_and_events(service: Running, bus: Bus):
    client = ResourceClient(bus)
    progress = await collect(client.load("tts"))
    assert progress[-1].state == "ready"
    await collect(client.ensure(["stt"], "turn", holder="h"))
    with pytest.raises(InUseError):
        await client.unload("stt")
    done = await client.unload("tts")
    assert done.ok and done.evicted == ["tts"]
    assert (await client.unload("tts")).error == "not resident"
    entries = await bus.range(m.EVENTS)
    events = [(e.model, e.state) for _, e in entries]
    assert ("tts", "ready") in events and ("tts", "unloaded") in events


async def test_stale_request_is_refused(service: Running, bus: Bus):
    reply = m.reply_stream("old")
    await bus.add(
        m.requests_stream("test-resource"),
        m.EnsureModels("old", ["stt"], "turn", None, reply, 0.0, time.time() - 3600),
    )
    got = []
    for _ in range(50):
        got = await bus.range(reply)
        if got:
            break
        await asyncio.sleep(0.05)
    assert got and isinstance(got[-1][1], m.EnsureDone) and got[-1][1].code == "stale"
    assert "stt" not in service.planner.residents


async def test_service_stop_mid_request_and_after(service: Running, bus: Bus):
    client = ResourceClient(bus)
    agen = client.ensure(["slow"], "prewarm")
    first = await agen.__anext__()
    assert first.model == "slow"
    await service.stop()
    with pytest.raises(ResourceGone):
        async for _ in agen:
            pass
    assert not await client.available()  # heartbeat key removed at exit
    assert await collect(client.ensure(["stt"])) == []  # a no-op now
    assert service.planner.residents == {}  # stop_on_exit
