"""Two GPU hosts on one Redis: two resource services, each managing only its own registry on its
own (simulated) GPU; the client sends each model to the host that manages it, prefers the host
where a model is resident, releases a turn's models on every host, and a second service under a
live one's id is refused."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from jarvis import models_cmd
from jarvis.launcher import Stack
from jarvis.redis_server import free_port
from services.resource import messages as m
from services.resource.client import ResourceClient, UnknownModelError
from shared.bus import Bus
from tests.integration.resource.conftest import MODELS, Running, close, run_service

BOTH = {"runtime": {"kind": "simulated"}, "footprint_mib": 2000}  # a model both hosts can run
HOST_A = {k: MODELS[k] for k in ("stt", "tts")} | {"both": BOTH}
HOST_B = {"llm": MODELS["llm"], "both": BOTH}


@pytest.fixture
async def hosts(redis_url: str, bus: Bus, tmp_path):
    started: list[Running] = []
    try:
        for sid, models in (("gpu-a", HOST_A), ("gpu-b", HOST_B)):
            started.append(await run_service(redis_url, tmp_path, sid, models))
        yield started
    finally:
        for running in started:
            await close(running)


async def collect(agen) -> list[m.ModelProgress]:
    return [p async for p in agen]


async def _until(cond, what: str, timeout: float = 5.0) -> Any:
    for _ in range(int(timeout / 0.02)):
        if got := await cond():
            return got
        await asyncio.sleep(0.02)
    raise TimeoutError(what)


async def test_each_model_is_loaded_on_the_host_that_manages_it(hosts: list[Running], bus: Bus):
    a, b = hosts
    client = ResourceClient(bus)
    records = {s.service_id: s for s in await client.services()}
    assert set(records) == {"gpu-a", "gpu-b"}
    assert records["gpu-a"].models == ["both", "stt", "tts"] and records["gpu-b"].models == ["both", "llm"]

    progress = await collect(client.ensure(["stt", "llm", "tts"], "turn", holder="turn-1"))
    assert {p.model for p in progress if p.state == "ready"} == {"stt", "llm", "tts"}
    assert set(a.planner.residents) == {"stt", "tts"} and set(b.planner.residents) == {"llm"}
    assert a.planner.gpu is not b.planner.gpu  # each plans its own GPU's memory

    # each host says where its models are resident
    async def resident() -> dict[str, set[str]]:
        got = {s.service_id: set(s.resident) for s in await client.services()}
        return got if got == {"gpu-a": {"stt", "tts"}, "gpu-b": {"llm"}} else {}

    await _until(resident, "the records never showed the residents")

    # the turn's hold is released on both hosts
    for sid in ("gpu-a", "gpu-b"):
        st = await client.status(sid)
        assert st is not None and [h["holder"] for h in st.holders] == ["turn-1"]
    await client.release("turn-1")

    async def released() -> bool:
        replies = [await client.status(sid) for sid in ("gpu-a", "gpu-b")]
        return all(r is not None and not r.holders for r in replies)

    await _until(released, "the hold was not released everywhere")
    st = await client.status("gpu-b")
    assert st is not None and st.service_id == "gpu-b" and {r["model"] for r in st.residents} == {"llm"}


async def test_a_model_on_two_hosts_is_asked_of_the_one_where_it_is_resident(hosts: list[Running], bus: Bus):
    a, b = hosts
    client = ResourceClient(bus)
    await b.planner.load("both")  # resident on B (say, a previous turn's)

    async def seen() -> bool:
        return any("both" in s.resident for s in await client.services(["gpu-b"]))

    await _until(seen, "B's record never showed 'both'")
    await collect(client.ensure(["both", "llm"], "turn", holder="t"))
    assert "both" not in a.planner.residents and set(b.planner.residents) == {"both", "llm"}
    # unload goes where it is resident
    await client.release("t")
    done = await client.unload("both")
    assert done.ok and done.evicted == ["both"] and "both" not in b.planner.residents


async def test_unknown_and_lost_hosts(hosts: list[Running], bus: Bus):
    a, b = hosts
    client = ResourceClient(bus)
    with pytest.raises(UnknownModelError, match="no running resource service manages 'nope'"):
        await collect(client.ensure(["stt", "nope"], "turn", holder="t"))
    assert a.planner.residents == {}  # nothing was asked of anyone

    await b.stop()  # host B's service goes: its models are nobody's now, A's still served
    assert [s.service_id for s in await client.services()] == ["gpu-a"]
    with pytest.raises(UnknownModelError):
        await collect(client.ensure(["llm"], "turn", holder="t"))
    await collect(client.ensure(["stt"], "turn", holder="t"))
    assert set(a.planner.residents) == {"stt"}


async def test_a_second_service_under_a_live_ones_id_is_refused(
    hosts: list[Running], redis_url: str, tmp_path, bus: Bus
):
    with pytest.raises(RuntimeError, match="another resource service runs as 'gpu-a'"):
        await run_service(redis_url, tmp_path / "twin", "gpu-a", HOST_B)
    assert len(await ResourceClient(bus).services()) == 2


async def test_a_crashed_services_record_does_not_block_its_restart(redis_url: str, bus: Bus, tmp_path):
    stale = m.ServiceRecord(
        service_id="gpu-c", instance="old", host="h", pid=1, backend="simulated", started=0, beat=0, models=[]
    )
    await bus.redis.set(m.alive_key("gpu-c"), stale.model_dump_json(), px=5000)  # left by a kill -9
    running = await run_service(redis_url, tmp_path, "gpu-c", HOST_A)
    try:
        (record,) = await ResourceClient(bus).services(["gpu-c"])
        assert record.instance == running.service.instance
    finally:
        await close(running)


async def test_jarvis_models_status_shows_every_host(hosts: list[Running], redis_url: str, capsys):
    assert await models_cmd.status(argparse.Namespace(redis_url=redis_url, json=True)) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["service_id"] for s in out["services"]] == ["gpu-a", "gpu-b"]
    assert set(out["services"][1]["models"]) == {"llm", "both"}
    assert await models_cmd.status(argparse.Namespace(redis_url=redis_url, json=False)) == 0
    text = capsys.readouterr().out
    assert "resource service: gpu-a" in text and "resource service: gpu-b" in text


def _gpu_host_env(service_id: str, models: dict[str, Any], state: Path) -> dict[str, str]:
    return {
        "JARVIS_RESOURCE_SERVICE_ID": service_id,
        "JARVIS_RESOURCE_GPU_BACKEND": "simulated",
        "JARVIS_RESOURCE_SIMULATED_GPU_MIB": "10000",
        "JARVIS_RESOURCE_RESERVE_MIB": "0",
        "JARVIS_RESOURCE_REGISTRY": json.dumps({"models": models}),
        "JARVIS_RESOURCE_STATE_DIR": str(state),
        "JARVIS_RESOURCE_CALIBRATION_FILE": str(state / "none.json"),
    }


async def test_two_gpu_hosts_as_processes(redis_url: str, bus: Bus, tmp_path):
    """`jarvis up --roles resource` on two hosts, each its own service id and registry: a turn's
    models are made resident on the host of each."""
    hosts = [
        Stack(
            profile="stub",
            port=free_port(),
            workdir=tmp_path / sid,
            roles=("resource",),
            redis_url=redis_url,
            env=_gpu_host_env(sid, models, tmp_path / sid),
        )
        for sid, models in (("gpu-a", HOST_A), ("gpu-b", HOST_B))
    ]
    try:
        for h in hosts:
            await asyncio.to_thread(h.start, 60)
            assert [p.name for p in h.procs] == ["resource"]  # nothing else runs on a GPU-only share
        client = ResourceClient(bus)
        await collect(client.ensure(["stt", "llm"], "turn", holder="turn-1"))
        where = {s.service_id: set(s.resident) for s in await client.services()}
        assert where == {"gpu-a": {"stt"}, "gpu-b": {"llm"}}
        await client.release("turn-1")
    finally:
        for h in hosts:
            await asyncio.to_thread(h.stop)
