"""The runtime interface: start, health-wait, stop and watch one model server.

A runtime turns a model's `RuntimeSpec` into a running server and back. The planner only
talks to this interface, so Docker, local processes and the simulated runtime are
interchangeable. Every method is async and must not block the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class RuntimeFailure(RuntimeError):
    """A model server failed to start, died, or did not become healthy in time."""


class StartFailed(RuntimeFailure):
    pass


class HealthTimeout(RuntimeFailure):
    pass


@dataclass(slots=True)
class Handle:
    """A running (or adopted) model server."""

    model: str
    kind: str  # "docker" | "process" | "simulated"
    ref: str  # container id, pid, or simulated key
    device: int = 0
    started_at: float = field(default_factory=time.time)
    adopted: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    obj: Any = None  # runtime-private (asyncio Process, ...)


# Called while waiting for health with (fraction of the expected time elapsed, message).
ProgressFn = Callable[[float, str], Awaitable[None]]

PLACEHOLDERS = ("gpu_memory_utilization", "footprint_mib", "device")


def render(args: list[str] | str | None, values: Mapping[str, str] | None) -> list[str] | str | None:
    """`{name}` placeholders (PLACEHOLDERS only; other braces are left alone) filled in."""
    if args is None or not values:
        return args

    def one(a: str) -> str:
        for k in PLACEHOLDERS:
            if k in values:
                a = a.replace("{" + k + "}", str(values[k]))
        return a

    return one(args) if isinstance(args, str) else [one(a) for a in args]


def start_values(footprint_mib: int, total_mib: int, device: int) -> dict[str, str]:
    """What a start fills in: vLLM's `--gpu-memory-utilization` is a fraction of the device's
    total memory, so the model's footprint is turned into that fraction (rounded down: the
    server then stays within its footprint)."""
    frac = 0.0 if total_mib <= 0 else int(1000 * footprint_mib / total_mib) / 1000
    return {
        "gpu_memory_utilization": f"{min(0.95, max(0.01, frac)):.3f}",
        "footprint_mib": str(footprint_mib),
        "device": str(device),
    }


class Runtime(Protocol):
    kind: str

    async def start(
        self, model: str, spec: Any, device: int, values: Mapping[str, str] | None = None
    ) -> Handle:
        """Launch the server (its command's placeholders filled from `values`); returns at
        once (before it is healthy)."""
        ...

    async def base_url(self, handle: Handle, spec: Any) -> str | None:
        """Where the server's HTTP API is reached from here ("http://host:port"; None: none)."""
        ...

    async def warm_up(self, handle: Handle, spec: Any) -> None:
        """One request of a realistic size (calibration: KV cache, CUDA graphs, allocator growth)."""
        ...

    async def sleep(self, handle: Handle, spec: Any, level: int) -> None: ...

    async def wake(self, handle: Handle, spec: Any, warmup: bool = True) -> None: ...

    async def wait_healthy(
        self, handle: Handle, spec: Any, timeout_s: float, progress: ProgressFn | None, expected_s: float
    ) -> None:
        """Return when the server answers its health check; raise HealthTimeout / StartFailed."""
        ...

    async def alive(self, handle: Handle, spec: Any) -> bool:
        """Is the server still there (cheap: process/container state, not a full health probe)?"""
        ...

    async def probe(self, handle: Handle, spec: Any) -> bool:
        """A full health probe (the periodic check of a resident model)."""
        ...

    async def gpu_usage(self, handle: Handle, gpu: Any) -> int | None:
        """MiB the server holds on its GPU now (None: cannot tell; e.g. no per-process NVML)."""
        ...

    async def stop(self, handle: Handle, grace_s: float) -> None:
        """Stop it and make sure it is gone (graceful, then forced)."""
        ...

    async def adopt(self) -> list[Handle]:
        """Servers a previous run of this service left behind (ours by label / state file)."""
        ...

    async def close(self) -> None: ...
