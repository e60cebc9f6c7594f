"""Host memory, as far as sleeping model servers are concerned.

A level-1 sleep moves a server's weights from the GPU to host RAM, so the planner only
chooses it while `available_mib()` (Linux's MemAvailable) leaves `host_reserve_mib` free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class HostMemory(Protocol):
    async def available_mib(self) -> int: ...


def meminfo_available_mib(path: Path = Path("/proc/meminfo")) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024  # kB
    raise OSError(f"{path}: no MemAvailable")


class ProcHostMemory:
    async def available_mib(self) -> int:
        return await asyncio.to_thread(meminfo_available_mib)


class SimulatedHostMemory:
    """A figure that something else keeps (the simulated runtime moves weights in and out)."""

    def __init__(self, read: Callable[[], int]):
        self._read = read

    async def available_mib(self) -> int:
        return self._read()
