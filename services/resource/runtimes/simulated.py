"""A pretend runtime for tests: "servers" that take memory on a `SimulatedGpu`.

Start allocates `ready_fraction` of the model's real usage at once (an OOM there is an
overcommit the tests catch), becomes healthy after `start_s`, and can be told to `grow` to
its full usage (a first inference), to die (`kill`), or to keep its memory for `release_s`
after a stop (a slow CUDA teardown, so the planner must wait for the GPU to show it free).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
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


class SimulatedRuntime:
    kind = "simulated"

    def __init__(self, gpu: SimulatedGpu, usage_of: Callable[[str], int]):
        self.gpu = gpu
        self.usage_of = usage_of  # real usage of a model when fully loaded, MiB
        self._servers: dict[str, _Server] = {}
        self._ids = itertools.count(1)
        self.starts: list[str] = []  # models in start order (for tests)
        self.stops: list[str] = []
        self.leftovers: list[Handle] = []  # what adopt() returns
        self._release_tasks: set[asyncio.Task] = set()

    def _key(self, handle: Handle) -> str:
        return handle.ref

    async def start(self, model: str, spec: SimulatedSpec, device: int) -> Handle:
        key = f"{model}#{next(self._ids)}"
        usage = self.usage_of(model)
        try:
            self.gpu.allocate(key, int(usage * spec.ready_fraction), device)
        except SimulatedOOM as exc:
            raise StartFailed(f"{model}: CUDA out of memory (simulated): {exc}") from exc
        self._servers[key] = _Server(model, device, usage, spec.release_s)
        self.starts.append(model)
        return Handle(model, self.kind, key, device)

    async def wait_healthy(
        self, handle: Handle, spec: SimulatedSpec, timeout_s: float, progress: ProgressFn | None = None,
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

    async def stop(self, handle: Handle, grace_s: float) -> None:
        key = self._key(handle)
        srv = self._servers.get(key)
        if srv is None:
            return
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

    def grow(self, model: str) -> None:
        """The model takes its full usage (first inference); may raise SimulatedOOM."""
        for key, s in self._servers.items():
            if s.model == model and not s.dead and not s.stopped:
                self.gpu.allocate(key, s.usage_mib, s.device)

    def kill(self, model: str) -> None:
        """The server dies (crash, OOM kill): its memory is freed at once."""
        for key, s in list(self._servers.items()):
            if s.model == model and not s.stopped:
                s.dead = True
                self.gpu.free(key, s.device)
