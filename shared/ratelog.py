"""Rate-limited logging: one record per cause per interval, with how many were held back, so a
client sending the same bad input (or Redis being away) never floods the log."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, every_s: float = 10.0, max_causes: int = 1024) -> None:
        self.logger = logger
        self.every_s = every_s
        self.max_causes = max_causes
        self._last: dict[str, tuple[float, int]] = {}  # cause -> (last logged, suppressed since)

    def log(self, level: int, cause: str, msg: str, *args: Any, **kw: Any) -> bool:
        """Log `msg` unless `cause` was logged in the last `every_s`; True when it was logged."""
        now = time.monotonic()
        last, held = self._last.get(cause, (0.0, 0))
        if last and now - last < self.every_s:
            self._last[cause] = (last, held + 1)
            return False
        if len(self._last) >= self.max_causes:
            self._last.clear()
        self._last[cause] = (now, 0)
        if held:
            msg = f"{msg} ({held} more like it in the last {self.every_s:.0f}s)"
        self.logger.log(level, msg, *args, **kw)
        return True

    def warning(self, cause: str, msg: str, *args: Any, **kw: Any) -> bool:
        return self.log(logging.WARNING, cause, msg, *args, **kw)

    def error(self, cause: str, msg: str, *args: Any, **kw: Any) -> bool:
        return self.log(logging.ERROR, cause, msg, *args, **kw)
