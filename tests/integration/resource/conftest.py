"""Fixtures: a resource service on a SimulatedGpu, serving the Redis API on the test Redis."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from services.resource.config import Registry, ResourceSettings
from services.resource.gpu import SimulatedGpu
from services.resource.host import SimulatedHostMemory
from services.resource.planner import Planner
from services.resource.runtimes import RuntimeSet
from services.resource.runtimes.simulated import SimulatedRuntime
from services.resource.service import ResourceService
from shared.bus import Bus

MODELS: dict[str, Any] = {
    "stt": {
        "runtime": {"kind": "simulated", "start_s": 0.05},
        "footprint_mib": 1000,
        "reload_cost_s": 1,
        "group": "speech",
    },
    "tts": {
        "runtime": {"kind": "simulated", "start_s": 0.05},
        "footprint_mib": 2000,
        "reload_cost_s": 2,
        "group": "speech",
    },
    "llm": {"runtime": {"kind": "simulated", "start_s": 0.1}, "footprint_mib": 5000, "reload_cost_s": 5},
    "vlm": {"runtime": {"kind": "simulated"}, "footprint_mib": 6000},
    "huge": {"runtime": {"kind": "simulated"}, "footprint_mib": 20000},
    "slow": {"runtime": {"kind": "simulated", "start_s": 30}, "footprint_mib": 10},
    "nap": {
        "runtime": {"kind": "simulated", "sleep_held_mib": 700},
        "footprint_mib": 5000,
        "sleep": {"held_mib": 1024, "host_mib": 5000},
    },
}


class Running:
    def __init__(self, service: ResourceService, task: asyncio.Task, stop: asyncio.Event, bus: Bus):
        self.service, self.task, self.stop_event, self.bus = service, task, stop, bus

    @property
    def planner(self) -> Planner:
        return self.service.planner

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 10)


async def run_service(
    redis_url: str,
    tmp_path: Path,
    service_id: str = "test-resource",
    models: dict[str, Any] = MODELS,
    gpu_mib: int = 10000,
) -> Running:
    """A resource service with its own simulated GPU and registry (one GPU host), running."""
    registry = Registry.model_validate({"models": models})
    state = tmp_path / service_id
    state.mkdir(parents=True, exist_ok=True)
    settings = ResourceSettings(
        registry=registry,
        gpu_backend="simulated",
        reserve_mib=0,
        busy_wait_s=0.2,
        heartbeat_ttl_s=3.0,  # a record lapses after 3 s without a beat: a loaded CI loop stalls past 1 s
        stop_grace_s=0,
        service_id=service_id,
        state_dir=state,
        log_dir=state,
    )
    gpu = SimulatedGpu(gpu_mib)
    fps = {k: v["footprint_mib"] for k, v in models.items()}
    runtime = SimulatedRuntime(gpu, lambda model: fps[model])
    planner = Planner(
        registry,
        fps,
        gpu,
        RuntimeSet({"simulated": runtime}),
        settings,
        host=SimulatedHostMemory(lambda: runtime.host_free_mib),
    )
    service_bus = Bus(redis_url, socket_timeout=10)
    svc = ResourceService(settings, service_bus, planner, block_ms=100)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    started = asyncio.ensure_future(svc.started.wait())
    await asyncio.wait({started, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        await service_bus.close()
        task.result()  # raises why it did not start
    return Running(svc, task, stop, service_bus)


async def close(running: Running) -> None:
    if not running.task.done():
        with contextlib.suppress(Exception):
            await running.stop()
    await running.bus.close()


@pytest.fixture
async def service(redis_url: str, bus: Bus, tmp_path):
    running = await run_service(redis_url, tmp_path)
    try:
        yield running
    finally:
        await close(running)
