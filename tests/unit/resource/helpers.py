"""A planner on a SimulatedGpu with the simulated runtime, and a controllable clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.resource.config import Registry, ResourceSettings
from services.resource.gpu import SimulatedGpu
from services.resource.host import SimulatedHostMemory
from services.resource.housekeeping import Housekeeper
from services.resource.planner import Planner
from services.resource.runtimes import RuntimeSet
from services.resource.runtimes.simulated import SimulatedRuntime


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def sim_model(footprint: int, **kw: Any) -> dict[str, Any]:
    runtime = {"kind": "simulated"}
    for k in ("start_s", "fail", "ready_fraction", "release_s", "sleep_held_mib", "wake_s"):
        if k in kw:
            runtime[k] = kw.pop(k)
    return {"runtime": runtime, "footprint_mib": footprint, **kw}


@dataclass
class Sim:
    planner: Planner
    gpu: SimulatedGpu
    runtime: SimulatedRuntime
    clock: FakeClock
    events: list[tuple[str, str, str]]
    housekeeper: Housekeeper


def make_sim(
    models: dict[str, dict[str, Any]],
    total_mib: int = 10000,
    foreign_mib: int = 0,
    groups: dict[str, dict[str, Any]] | None = None,
    host_mib: int = 65536,
    **settings: Any,
) -> Sim:
    registry = Registry.model_validate({"models": models, "groups": groups or {}})
    defaults: dict[str, Any] = {
        "gpu_backend": "simulated",
        "reserve_mib": 0,
        "busy_wait_s": 0.0,
        "release_wait_s": 2.0,
        "keep_alive_s": 300.0,
        "hold_ttl_s": 60.0,
        "stop_grace_s": 0.0,
        "health_timeout_s": 5.0,
    }
    rs = ResourceSettings(registry=registry, **{**defaults, **settings})
    gpu = SimulatedGpu(total_mib, foreign_mib)
    fps = {m: s.footprint_mib for m, s in registry.models.items()}
    runtime = SimulatedRuntime(gpu, lambda m: fps.get(m, 0), host_mib)
    clock = FakeClock()
    events: list[tuple[str, str, str]] = []

    async def on_event(model: str, state: str, message: str) -> None:
        events.append((model, state, message))

    planner = Planner(
        registry,
        fps,
        gpu,
        RuntimeSet({"simulated": runtime}),
        rs,
        clock=clock,
        on_event=on_event,
        host=SimulatedHostMemory(lambda: runtime.host_free_mib),
    )
    return Sim(planner, gpu, runtime, clock, events, Housekeeper(planner))
