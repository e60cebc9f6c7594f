"""Per-request load progress: states, 0..1 progress and an ETA, throttled for the wire.

An `Emitter` belongs to one ensure request. Its ETA for a model adds up the expected
start times (`reload_cost_s`) of the request's models still ahead of it, minus what the one
starting now has already spent, plus, while queued, the expected rest of the request that
holds the device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

State = Literal["queued", "evicting", "starting", "loading", "ready", "failed"]


@dataclass(slots=True)
class Progress:
    model: str
    state: State
    progress: float  # 0..1
    eta_s: float  # seconds until this model is expected ready
    message: str = ""


ProgressSink = Callable[[Progress], Awaitable[None]]


class Emitter:
    """Per-request progress: throttled, with an ETA over the models still to start."""

    def __init__(self, sink: ProgressSink | None, costs: dict[str, float], min_interval_s: float = 0.25):
        self.sink = sink
        self.costs = costs
        self.order: list[str] = []  # models not yet ready, in start order
        self.current: str | None = None
        self.current_t0 = 0.0
        self.min_interval_s = min_interval_s
        self._last: dict[str, tuple[str, float]] = {}
        self.wait_s: Callable[[], float] = lambda: 0.0  # expected wait for the device (while queued)

    def eta(self, model: str) -> float:
        t = 0.0
        for m in self.order:
            cost = self.costs.get(m, 10.0)
            if m == self.current:
                t += max(0.0, cost - (time.monotonic() - self.current_t0))
            else:
                t += cost
            if m == model:
                return round(t, 2)
        return 0.0

    async def __call__(self, model: str, state: State, progress: float, message: str = "") -> None:
        if self.sink is None:
            return
        now = time.monotonic()
        last = self._last.get(model)
        if (
            last is not None
            and last[0] == state
            and now - last[1] < self.min_interval_s
            and state
            not in (
                "ready",
                "failed",
            )
        ):
            return
        self._last[model] = (state, now)
        eta = 0.0 if state in ("ready", "failed") else self.eta(model)
        if state == "queued":
            eta = round(eta + max(0.0, self.wait_s()), 2)
        try:
            await self.sink(Progress(model, state, round(max(0.0, min(1.0, progress)), 3), eta, message))
        except Exception:  # a reporting failure must not fail the load
            log.exception("progress sink failed")
