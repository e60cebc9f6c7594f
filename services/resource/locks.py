"""A priority mutex: one per GPU device, so requests for a device run one at a time.

Waiters are served by (priority, arrival): a turn's request (priority 0) goes before a
queued prewarm (1), which goes before housekeeping (2). The running holder is never
preempted. A waiter cancelled while queued leaves the queue; one cancelled just as the
lock was handed to it passes the lock on.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

TURN = 0
PREWARM = 1
HOUSEKEEPING = 2
PRIORITIES = {"turn": TURN, "prewarm": PREWARM, "housekeeping": HOUSEKEEPING}


class PriorityLock:
    def __init__(self) -> None:
        self._locked = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def locked(self) -> bool:
        return self._locked

    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    async def acquire(self, priority: int = TURN) -> None:
        if not self._locked and not self.waiting():
            self._locked = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # it was handed to us as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # handed over: stays locked
                return
        self._locked = False

    @asynccontextmanager
    async def hold(self, priority: int = TURN) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
