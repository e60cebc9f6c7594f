"""Batches XADDs from every connection into one pipelined round trip per loop tick."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared.bus import Bus

log = logging.getLogger("jarvis.gateway.publisher")


class Publisher:
    def __init__(self, bus: Bus, max_batch: int = 512, busy_above: int = 16, pace_ms: float = 2.0) -> None:
        self.bus = bus
        self.busy_above = busy_above  # pending senders past which flushes are paced
        self.pace_s = pace_ms / 1000
        self.senders = 0  # connections feeding this publisher (set by the gateway)
        self.max_batch = max_batch
        self._items: list[tuple[str, Any, int | None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="publisher")

    async def close(self) -> None:
        if self._task:
            self._wake.set()
            await self.flush()
            self._task.cancel()

    def put(self, stream: str, msg: Any, maxlen: int | None) -> None:
        self._items.append((stream, msg, maxlen))
        self._wake.set()

    async def flush(self) -> None:
        while self._items:
            batch, self._items = self._items[: self.max_batch], self._items[self.max_batch :]
            await self.bus.add_many(batch)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("publish failed")
