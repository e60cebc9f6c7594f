"""Batches XADDs from every connection into one round trip per loop tick.

Each entry is encoded when it is put, so one client's unencodable input (a lone surrogate in
its options) fails only that client's message, never the batch it would have joined. Should
Redis refuse a batch anyway, its entries are written one by one and only the refused ones are
dropped. While Redis is away the buffer is bounded by age: input older than `max_age_s` is
dropped (audio first) instead of growing without end and flooding the session when Redis
comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import ResponseError

from shared import codec
from shared.bus import Bus
from shared.messages import Audio, ScoredAudio
from shared.ratelog import RateLimitedLog

log = logging.getLogger("jarvis.gateway.publisher")
_log = RateLimitedLog(log)


class Unencodable(ValueError):
    """An entry that can't be written (the caller tells its client)."""


class Publisher:
    def __init__(
        self,
        bus: Bus,
        max_batch: int = 512,
        max_age_s: float = 10.0,
    ) -> None:
        self.bus = bus
        self.max_batch = max_batch
        self.max_age_s = max_age_s
        self.dropped = 0  # entries dropped for age while Redis was away
        # (stream, payload, maxlen, queued at, is audio)
        self._items: list[tuple[str, bytes, int | None, float, bool]] = []
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
        """Queue one entry; raises Unencodable (and queues nothing) when it can't be written."""
        try:
            payload = codec.encode(msg)
        except (ValueError, TypeError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
            raise Unencodable(f"{type(exc).__name__}: {exc}") from None
        self._items.append((stream, payload, maxlen, time.monotonic(), type(msg) in (Audio, ScoredAudio)))
        if len(self._items) % 256 == 0:  # Redis may be away, the flush stuck on it: stay bounded
            self._expire()
        self._wake.set()

    def _expire(self) -> None:
        """Drop what waited longer than max_age_s (Redis away): stale audio first."""
        if not self._items or time.monotonic() - self._items[0][3] <= self.max_age_s:
            return
        cutoff = time.monotonic() - self.max_age_s
        kept = [it for it in self._items if it[3] >= cutoff or not it[4]]
        if len(kept) > 4 * self.max_batch * 16:  # commands too, past a generous bound
            kept = [it for it in kept if it[3] >= cutoff]
        n = len(self._items) - len(kept)
        if n:
            self.dropped += n
            _log.warning("stale", "redis away: dropped %d queued entries older than %.0fs", n, self.max_age_s)
        self._items = kept

    async def flush(self) -> None:
        while self._items:
            self._expire()
            batch, self._items = self._items[: self.max_batch], self._items[self.max_batch :]
            items = [(stream, payload, maxlen) for stream, payload, maxlen, _, _ in batch]
            try:
                await self._write(items)
            except asyncio.CancelledError:
                self._items = batch + self._items
                raise

    async def _write(self, items: list[tuple[str, bytes, int | None]]) -> None:
        try:
            await self.bus.add_encoded(items)
        except ResponseError as exc:
            _log.error("refused", "redis refused a batch (%s); writing its entries one by one", exc)
            for item in items:
                try:
                    await self.bus.add_encoded([item])
                except ResponseError as one:
                    _log.error(f"refused:{item[0]}", "dropped an entry for %s: %s", item[0], one)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                _log.error(type(exc).__name__, "publish failed: %s", exc, exc_info=True)
