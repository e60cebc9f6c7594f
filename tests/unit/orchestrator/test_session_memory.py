"""A long session's memory: the runner keeps the history and nothing else that grows with the
number of turns (no per-turn bookkeeping left behind by answered, interrupted or timed-out turns).
Runs the runner with the in-memory host of test_session.py and measures with tracemalloc."""

from __future__ import annotations

import gc
import time
import tracemalloc

from services.orchestrator.session import SessionRunner
from shared import protocol as p
from shared.config import Settings
from shared.messages import SessionStart
from shared.sessions import Session
from tests.unit.orchestrator.test_session import (
    QUIET,
    SILENCE_MODE,
    SPEECH,
    FakeHost,
    answer,
    speak,
    utterance,
)

# what the runner may keep per turn beyond the history: allocator and interpreter noise (~110 B
# measured); a turn's audio (tens of KB) or its Turn (KBs) left behind fails it at once
PER_TURN_BYTES = 256


async def _turns(runner: SessionRunner, host: FakeHost, n: int) -> None:
    """`n` turns of every ending a long session sees: heard to the end, barged in on, failed by
    a stage that went silent. The client's events and the history are dropped after each, so
    only what the runner itself holds is left."""
    for i in range(n):
        speak(runner, host, utterance())
        if i % 7 == 6:  # a stage goes silent: the turn ends with an error
            runner.tick(time.time() + runner.cfg.stage_timeout_s + 1)
        else:
            await answer(runner, host, "what is the capital of Spain", "Madrid. It is in the middle.", 3.0)
            if i % 5 == 4:  # the user talks over the reply
                speak(runner, host, [SPEECH] * 26 + [QUIET] * 9)
        await host.settle()
        runner.tick(time.time() + 10)
        await host.settle()
        assert runner.state in (p.State.LISTENING, p.State.THINKING), runner.state
        if runner.turn is not None:  # a barge-in's speech became the next turn: answer it
            await answer(runner, host, "go on", "Fine.", 0.1, 1.0)
            runner.tick(time.time() + 10)
        host.entries.clear()
        runner.session.history.clear()


async def test_memory_does_not_grow_with_turns_beyond_the_history():
    host = FakeHost()
    runner = SessionRunner(host, Session(id="s1"), 1, "0-0", Settings(), SILENCE_MODE, vad_stream=object())
    await runner.on_start(SessionStart("s1", "sts", None, 16000, False, {}, False, time.time()), False)
    await host.settle()
    await _turns(runner, host, 30)  # caches, interned strings, metrics label children
    tracemalloc.start()
    try:
        await _turns(runner, host, 50)
        gc.collect()
        before = tracemalloc.take_snapshot()
        await _turns(runner, host, 250)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = [tracemalloc.Filter(True, "*/services/*"), tracemalloc.Filter(True, "*/shared/*")]
    diff = after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    grown = sum(s.size_diff for s in diff)
    assert grown < 250 * PER_TURN_BYTES, f"the runner kept {grown / 250:.0f} bytes per turn"
    assert not (runner.held or runner.pauses or runner.paused_text or runner.lost or runner.queued)
    assert len(runner.recent) <= 4
