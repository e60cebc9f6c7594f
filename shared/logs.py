"""Structured logging: one JSON object per line, with session and turn ids when known."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

session_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("session", default=None)
turn_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("turn", default=None)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        sid = getattr(record, "session", None) or session_var.get()
        turn = getattr(record, "turn", None) or turn_var.get()
        if sid:
            out["session"] = sid
        if turn is not None:
            out["turn"] = turn
        for k, v in record.__dict__.items():
            if k not in _RESERVED and k not in out and k not in ("session", "turn") and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("websockets", "httpx", "openai", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
