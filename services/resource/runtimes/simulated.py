"""A pretend runtime for tests: "servers" that take memory on a `SimulatedGpu`.

Start allocates `ready_fraction` of the model's real usage at once (an OOM there is an
overcommit the tests catch), becomes healthy after `start_s`, and can be told to `grow` to
its full usage (a first inference), to die (`kill`), or to keep its memory for `release_s`
after a stop (a slow CUDA teardown, so the planner must wait for the GPU to show it free).
It can sleep: its usage drops to `sleep_held_mib` (what a sleeping vLLM keeps) and the rest
moves to the simulated host RAM (`host_free_mib`); a wake takes it back.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.resource.config import SimulatedSpec
from services.resource.gpu import SimulatedGpu, SimulatedOOM
from services.resource.runtimes.base import Handle, HealthTimeout, ProgressFn, StartFailed


@dataclass
class _Server:
    model: str
    device: int
    usage_mib: int
    release_s: float = 0.0
    dead: bool = False
    stopped: bool = False
    sleeping: bool = False
    awake_mib: int = 0  # its usage when it fell asleep


class SimulatedRuntime:
    kind = "simulated"

    def __init__(self, gpu: SimulatedGpu, usage_of: Callable[[str], int], host_mib: int = 65536):
        self.gpu = gpu
        self.usage_of = usage_of  # real usage of a model when fully loaded, MiB
        self.host_free_mib = host_mib  # simulated host RAM: level-1 sleeps move weights here
        self.wakes: list[str] = []
        self.started_with: dict[str, dict[str, str]] = {}  # model -> what its latest start filled in
        self.sleeps: list[str] = []
        self._servers: dict[str, _Server] = {}
        self._ids = itertools.count(1)
        self.starts: list[str] = []  # models in start order (for tests)
        self.stops: list[str] = []
        self.leftovers: list[Handle] = []  # what adopt() returns
        self._release_tasks: set[asyncio.Task] = set()

    def _key(self, handle: Handle) -> str:
        return handle.ref

    async def start(
        self, model: str, spec: SimulatedSpec, device: int, values: Mapping[str, str] | None = None
    ) -> Handle:
        key = f"{model}#{next(self._ids)}"
        usage = self.usage_of(model)
        try:
            self.gpu.allocate(key, int(usage * spec.ready_fraction), device)
        except SimulatedOOM as exc:
            raise StartFailed(f"{model}: CUDA out of memory (simulated): {exc}") from exc
        self._servers[key] = _Server(model, device, usage, spec.release_s)
        self.started_with[model] = dict(values or {})
        self.starts.append(model)
        return Handle(model, self.kind, key, device)

    async def wait_healthy(
        self,
        handle: Handle,
        spec: SimulatedSpec,
        timeout_s: float,
        progress: ProgressFn | None = None,
        expected_s: float = 10.0,
    ) -> None:
        srv = self._servers[self._key(handle)]
        t0 = time.monotonic()
        while time.monotonic() - t0 < spec.start_s or spec.fail:
            if srv.dead:
                raise StartFailed(f"{handle.model} died while starting")
            elapsed = time.monotonic() - t0
            if elapsed >= timeout_s:
                raise HealthTimeout(f"{handle.model} not healthy after {timeout_s}s")
            if progress is not None:
                await progress(min(0.95, elapsed / spec.start_s) if spec.start_s else 0.95, "loading")
            await asyncio.sleep(min(0.01, max(0.0, timeout_s - elapsed)))
        if srv.dead:
            raise StartFailed(f"{handle.model} died while starting")

    async def alive(self, handle: Handle, spec: SimulatedSpec | None = None) -> bool:
        srv = self._servers.get(self._key(handle))
        return srv is not None and not srv.dead and not srv.stopped

    async def probe(self, handle: Handle, spec: SimulatedSpec) -> bool:
        return await self.alive(handle)

    async def base_url(self, handle: Handle, spec: SimulatedSpec) -> str | None:
        return None

    async def warm_up(self, handle: Handle, spec: SimulatedSpec) -> None:
        """A first real request: the server takes its full usage."""
        srv = self._servers.get(self._key(handle))
        if srv is not None and not srv.dead and not srv.stopped and not srv.sleeping:
            self.gpu.allocate(self._key(handle), srv.usage_mib, srv.device)

    async def sleep(self, handle: Handle, spec: SimulatedSpec, level: int) -> None:
        srv = self._servers[self._key(handle)]
        if srv.dead or srv.stopped:
            raise StartFailed(f"{handle.model} is gone: cannot sleep")
        srv.awake_mib = self.gpu.allocated(self._key(handle), srv.device)
        held = min(spec.sleep_held_mib, srv.awake_mib)  # it never holds more asleep than awake
        if level == 1:
            self.host_free_mib -= max(0, srv.awake_mib - held)
        self.gpu.allocate(self._key(handle), held, srv.device)
        srv.sleeping = True
        self.sleeps.append(handle.model)

    async def wake(self, handle: Handle, spec: SimulatedSpec, warmup: bool = True) -> None:
        key = self._key(handle)
        srv = self._servers[key]
        if srv.dead or srv.stopped:
            raise StartFailed(f"{handle.model} is gone: cannot wake")
        if spec.wake_s:
            await asyncio.sleep(spec.wake_s)
        held = self.gpu.allocated(key, srv.device)
        try:
            self.gpu.allocate(key, srv.awake_mib or held, srv.device)
        except SimulatedOOM as exc:
            raise StartFailed(f"{handle.model}: CUDA out of memory waking (simulated): {exc}") from exc
        self.host_free_mib += max(0, srv.awake_mib - held)
        srv.sleeping = False
        self.wakes.append(handle.model)

    async def stop(self, handle: Handle, grace_s: float) -> None:
        key = self._key(handle)
        srv = self._servers.get(key)
        if srv is None:
            return
        if srv.sleeping:
            self.host_free_mib += max(0, srv.awake_mib - self.gpu.allocated(key, srv.device))
            srv.sleeping = False
        srv.stopped = True
        self.stops.append(handle.model)
        if srv.release_s <= 0 or srv.dead:
            self._release(key)
        else:
            t = asyncio.get_running_loop().create_task(self._release_later(key, srv.release_s))
            self._release_tasks.add(t)
            t.add_done_callback(self._release_tasks.discard)

    async def _release_later(self, key: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self._release(key)

    def _release(self, key: str) -> None:
        srv = self._servers.pop(key, None)
        if srv is not None:
            self.gpu.free(key, srv.device)

    async def gpu_usage(self, handle: Handle, gpu: object) -> int | None:
        srv = self._servers.get(self._key(handle))
        if srv is None or srv.dead:
            return None
        return self.gpu.allocated(self._key(handle), srv.device)

    async def adopt(self) -> list[Handle]:
        return list(self.leftovers)

    async def close(self) -> None:
        for t in list(self._release_tasks):
            t.cancel()

    # ---- test controls --------------------------------------------------------------

    def running(self) -> list[str]:
        return [s.model for s in self._servers.values() if not s.dead and not s.stopped]

    def sleeping(self) -> list[str]:
        return [s.model for s in self._servers.values() if s.sleeping and not s.dead and not s.stopped]

    def grow(self, model: str) -> None:
        """The model takes its full usage (first inference); may raise SimulatedOOM."""
        for key, s in self._servers.items():
            if s.model == model and not s.dead and not s.stopped and not s.sleeping:
                self.gpu.allocate(key, s.usage_mib, s.device)

    def kill(self, model: str) -> None:
        """The server dies (crash, OOM kill): its memory is freed at once."""
        for key, s in list(self._servers.items()):
            if s.model == model and not s.stopped:
                if s.sleeping:
                    self.host_free_mib += max(0, s.awake_mib - self.gpu.allocated(key, s.device))
                    s.sleeping = False
                s.dead = True
                self.gpu.free(key, s.device)
