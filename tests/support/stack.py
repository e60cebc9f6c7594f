"""Run the whole stack (embedded Redis + every service as a process) for a test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from jarvis.launcher import Stack
from jarvis.redis_server import free_port


@contextlib.contextmanager
def running_stack(tmp: Path, profile: str = "stub", timeout: float = 180, **kw) -> Iterator[Stack]:
    stack = Stack(profile=profile, port=free_port(), workdir=tmp, **kw)
    stack.start(timeout=timeout)
    try:
        yield stack
    finally:
        stack.stop()
