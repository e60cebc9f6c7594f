"""In-use tracking: which holder (a turn, an orchestrator) pins which models, until when.

A pinned model is never evicted. Every hold expires `ttl_s` after it was last acquired or
renewed, so a holder that died (a crashed orchestrator) cannot pin models forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Hold:
    holder: str
    models: set[str] = field(default_factory=set)
    expires_at: float = 0.0


class HoldTable:
    def __init__(self, default_ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.default_ttl_s = default_ttl_s
        self.clock = clock
        self._holds: dict[str, Hold] = {}

    def acquire(self, holder: str, models: Iterable[str], ttl_s: float | None = None) -> Hold:
        """Pin `models` for `holder` (adding to what it holds) and renew its expiry."""
        h = self._holds.setdefault(holder, Hold(holder))
        h.models.update(models)
        h.expires_at = self.clock() + (ttl_s if ttl_s and ttl_s > 0 else self.default_ttl_s)
        return h

    def renew(self, holder: str, ttl_s: float | None = None) -> bool:
        h = self._holds.get(holder)
        if h is None or h.expires_at <= self.clock():
            return False
        h.expires_at = self.clock() + (ttl_s if ttl_s and ttl_s > 0 else self.default_ttl_s)
        return True

    def release(self, holder: str) -> set[str]:
        """Drop the hold; returns the models it pinned."""
        h = self._holds.pop(holder, None)
        return set(h.models) if h else set()

    def expire(self) -> list[Hold]:
        now = self.clock()
        gone = [h for h in self._holds.values() if h.expires_at <= now]
        for h in gone:
            del self._holds[h.holder]
        return gone

    def holders_of(self, model: str) -> list[str]:
        now = self.clock()
        return [h.holder for h in self._holds.values() if model in h.models and h.expires_at > now]

    def is_held(self, model: str) -> bool:
        return bool(self.holders_of(model))

    def all(self) -> list[Hold]:
        now = self.clock()
        return [h for h in self._holds.values() if h.expires_at > now]
