"""The GPU as the planner sees it: total / used / free memory per device.

`NvmlGpu` asks NVML (pynvml, from nvidia-ml-py), so memory taken by processes we did not
start counts too: the planner plans with NVML's free figure, never its own bookkeeping
alone. Every NVML call runs in a worker thread (`asyncio.to_thread`).

`SimulatedGpu` is a pretend device of a configurable size for tests and machines without a
GPU: the simulated runtime allocates a model's footprint on it, `foreign_mib` stands for
other processes, and any allocation past the total is recorded as an overcommit (and raises
like a CUDA out-of-memory would), so tests can assert it never happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    total_mib: int
    used_mib: int
    free_mib: int
    uuid: str = ""
    driver: str = ""


class GpuUnavailable(RuntimeError):
    """NVML could not be initialised (no driver, no device)."""


class Gpu(Protocol):
    backend: str

    async def device_count(self) -> int: ...

    async def info(self, index: int) -> GpuInfo: ...

    async def process_usage(self, index: int) -> dict[int, int] | None:
        """MiB used per pid on the device (None: this backend cannot tell)."""
        ...

    async def close(self) -> None: ...


class NvmlGpu:
    """Real devices through NVML."""

    backend = "nvml"

    def __init__(self) -> None:
        self._initialised = False
        self._lock = threading.Lock()

    def _init_sync(self) -> None:
        import pynvml

        with self._lock:
            if self._initialised:
                return
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as exc:
                raise GpuUnavailable(f"NVML: {exc}") from exc
            self._initialised = True

    async def open(self) -> NvmlGpu:
        await asyncio.to_thread(self._init_sync)
        if await self.device_count() == 0:
            raise GpuUnavailable("NVML found no GPU")
        return self

    async def device_count(self) -> int:
        import pynvml

        return await asyncio.to_thread(pynvml.nvmlDeviceGetCount)

    def _info_sync(self, index: int) -> GpuInfo:
        import pynvml

        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        name = pynvml.nvmlDeviceGetName(h)
        try:
            uuid = pynvml.nvmlDeviceGetUUID(h)
        except pynvml.NVMLError:
            uuid = ""
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
        except pynvml.NVMLError:
            driver = ""
        return GpuInfo(
            index=index,
            name=name.decode() if isinstance(name, bytes) else str(name),
            total_mib=int(mem.total // MIB),
            used_mib=int(mem.used // MIB),
            free_mib=int(mem.free // MIB),
            uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
            driver=driver.decode() if isinstance(driver, bytes) else str(driver),
        )

    async def info(self, index: int) -> GpuInfo:
        return await asyncio.to_thread(self._info_sync, index)

    def _process_usage_sync(self, index: int) -> dict[int, int] | None:
        import pynvml

        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        out: dict[int, int] = {}
        try:
            procs = list(pynvml.nvmlDeviceGetComputeRunningProcesses(h))
            with contextlib.suppress(pynvml.NVMLError):
                procs += list(pynvml.nvmlDeviceGetGraphicsRunningProcesses(h))
        except pynvml.NVMLError:
            return None
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            if isinstance(used, int) and used >= 0:
                out[int(p.pid)] = out.get(int(p.pid), 0) + used // MIB
        return out

    async def process_usage(self, index: int) -> dict[int, int] | None:
        return await asyncio.to_thread(self._process_usage_sync, index)

    async def close(self) -> None:
        import pynvml

        if self._initialised:
            self._initialised = False
            with contextlib.suppress(pynvml.NVMLError):
                await asyncio.to_thread(pynvml.nvmlShutdown)


class SimulatedOOM(MemoryError):
    """An allocation past the simulated device's total (an overcommit)."""


@dataclass
class _SimDevice:
    total_mib: int
    foreign_mib: int = 0
    allocations: dict[str, int] = field(default_factory=dict)
    peak_mib: int = 0

    @property
    def used_mib(self) -> int:
        return self.foreign_mib + sum(self.allocations.values())


class SimulatedGpu:
    """Pretend devices: allocations by owner key, foreign usage, overcommit detection."""

    backend = "simulated"

    def __init__(self, total_mib: int, foreign_mib: int = 0, devices: int = 1, name: str = "Simulated GPU"):
        self.name = name
        self._devices = [_SimDevice(total_mib, foreign_mib) for _ in range(devices)]
        self.overcommits: list[str] = []  # one line per allocation that did not fit

    def _dev(self, index: int) -> _SimDevice:
        try:
            return self._devices[index]
        except IndexError:
            raise GpuUnavailable(f"simulated GPU has no device {index}") from None

    async def device_count(self) -> int:
        return len(self._devices)

    def info_now(self, index: int = 0) -> GpuInfo:
        d = self._dev(index)
        used = d.used_mib
        return GpuInfo(index, self.name, d.total_mib, used, max(0, d.total_mib - used), f"SIM-{index}", "sim")

    async def info(self, index: int) -> GpuInfo:
        return self.info_now(index)

    async def process_usage(self, index: int) -> dict[int, int] | None:
        return None  # simulated servers have no pids; the simulated runtime reports its own

    async def close(self) -> None:
        return None

    # ---- what simulated "processes" do ----------------------------------------------

    def allocate(self, owner: str, mib: int, index: int = 0) -> None:
        """Set `owner`'s usage to `mib` (grow or shrink); raise SimulatedOOM past the total."""
        d = self._dev(index)
        before = d.allocations.get(owner, 0)
        if d.used_mib - before + mib > d.total_mib:
            msg = f"{owner}: {mib} MiB on device {index} with {d.total_mib - d.used_mib + before} MiB free"
            self.overcommits.append(msg)
            raise SimulatedOOM(msg)
        d.allocations[owner] = mib
        d.peak_mib = max(d.peak_mib, d.used_mib)

    def free(self, owner: str, index: int = 0) -> None:
        self._dev(index).allocations.pop(owner, None)

    def allocated(self, owner: str, index: int = 0) -> int:
        return self._dev(index).allocations.get(owner, 0)

    def set_foreign(self, mib: int, index: int = 0) -> None:
        """Other processes' usage (what NVML would count but we did not start)."""
        d = self._dev(index)
        if mib - d.foreign_mib > d.total_mib - d.used_mib:
            raise SimulatedOOM(f"foreign {mib} MiB does not fit on device {index}")
        d.foreign_mib = mib
        d.peak_mib = max(d.peak_mib, d.used_mib)

    def foreign(self, index: int = 0) -> int:
        return self._dev(index).foreign_mib

    def peak(self, index: int = 0) -> int:
        return self._dev(index).peak_mib


async def open_gpu(backend: str, simulated_mib: int = 24576, simulated_foreign_mib: int = 0) -> Gpu:
    """`nvml` (the real GPU) or `simulated` (only when asked for).

    There is no silent fallback: planning against a pretend device would admit loads the
    real one cannot hold. Without a usable NVIDIA GPU, `nvml` raises GpuUnavailable with
    what to do about it.
    """
    if backend == "simulated":
        return SimulatedGpu(simulated_mib, simulated_foreign_mib)
    if backend != "nvml":
        raise ValueError(f"unknown GPU backend {backend!r} (nvml or simulated)")
    try:
        return await NvmlGpu().open()
    except ImportError as exc:
        raise GpuUnavailable(f"nvidia-ml-py is not installed ({exc}); {NO_GPU_HINT}") from exc
    except GpuUnavailable as exc:
        raise GpuUnavailable(f"{exc}; {NO_GPU_HINT}") from exc


NO_GPU_HINT = (
    "the resource service needs an NVIDIA GPU that NVML can see (driver installed; in a container, "
    "the GPU reserved for it: compose's gpu profile does that). Without a GPU use the cpu profile, "
    "or JARVIS_RESOURCE_GPU_BACKEND=simulated for a pretend GPU of JARVIS_RESOURCE_SIMULATED_GPU_MIB"
)
