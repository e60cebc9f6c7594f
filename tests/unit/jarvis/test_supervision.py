"""`jarvis up`'s supervision: a dead service comes back at once, then with growing backoff; an
optional one that keeps crashing is given up alone and reported, a required one never is."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from jarvis.launcher import GIVE_UP_AFTER, Proc, Stack


def _crasher(tmp: Path, name: str, optional: bool) -> Proc:
    return Proc(
        name, [sys.executable, "-c", "raise SystemExit(3)"], {}, tmp / f"{name}.log", optional=optional
    )


def _until(stack: Stack, cond, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not cond():
        stack.supervise_once()
        time.sleep(0.02)


def test_a_crash_looping_optional_service_is_given_up_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("jarvis.launcher.BACKOFF_MAX_S", 0.05)
    stack = Stack(profile="stub", workdir=tmp_path)
    vlm = _crasher(tmp_path, "vlm", optional=True)
    llm = _crasher(tmp_path, "llm", optional=False)
    stack.procs = [vlm, llm]
    for p in stack.procs:
        p.start()
    try:
        _until(stack, lambda: vlm.given_up and len(llm.restarts) > GIVE_UP_AFTER + 2, 30)
        assert stack.given_up == ["vlm"]
        assert len(vlm.restarts) == GIVE_UP_AFTER
        assert not llm.given_up and len(llm.restarts) > GIVE_UP_AFTER  # required: restarted still
        assert "giving it up" in capsys.readouterr().err
    finally:
        stack.stop()


def test_the_first_restart_is_immediate_then_backoff_grows(tmp_path):
    stack = Stack(profile="stub", workdir=tmp_path)
    p = _crasher(tmp_path, "stt", optional=False)
    stack.procs = [p]
    p.start()
    try:
        _until(stack, lambda: len(p.restarts) >= 3, 10)
        gaps = [b - a for a, b in zip(p.restarts, p.restarts[1:], strict=False)]
        assert gaps[0] >= 0.5 and gaps[1] >= 1.0  # 0, 0.5 s, 1 s, ...
    finally:
        stack.stop()
