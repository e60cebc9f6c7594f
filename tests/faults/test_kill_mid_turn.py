"""kill -9 of each kind of process while a turn is in flight: the turn completes (or ends with a
clear error) within DEADLINE_S, the session's next turn is answered, and the history holds each
question once with all its words."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import (
    DEADLINE_S,
    Talker,
    all_words,
    history,
    kill,
    owner_pid,
    proc,
    question,
    spoken_seconds,
)

pytestmark = pytest.mark.faults


async def _kill_during(stack, kind: str, when: str) -> None:
    t = await Talker(stack).open()
    try:
        q1, words1 = await question(0)
        t.ask(q1)
        if when == "thinking":
            await t.wait_for("vad", speaking=False)
            await asyncio.sleep(0.2)  # the STT job is being worked on
        elif when == "reply":
            await t.wait_for("reply", turn=1)
        elif when == "audio":
            await t.wait_for("audio_start", turn=1)
            await asyncio.sleep(0.1)
        pid = (
            owner_pid(stack, t.sid)
            if kind == "owner"
            else (stack.redis.pid if kind == "redis" else proc(stack, kind).pid)
        )
        killed = kill(pid)
        done = await _outcome(t, turn=1, deadline=DEADLINE_S)
        elapsed = time.monotonic() - killed
        assert done["type"] in ("metrics", "error"), done
        assert elapsed <= DEADLINE_S, f"the turn took {elapsed:.1f}s after the kill"

        q2, words2 = await question(1)
        t.ask(q2)
        second = await t.wait_for("metrics", turn=2, timeout=30)
        assert second["turn"] == 2
        await asyncio.sleep(0.5)  # the history is saved just after the metrics
        users = [h["user"] for h in history(stack, t.sid)]
        if done["type"] == "metrics":  # each question once, with all its words
            assert len(users) == 2, users
            assert all_words(users[0], words1) and all_words(users[1], words2), (users, words1, words2)
        elif kind != "stt":  # answered with an error: the question is in the history, whole
            assert len(users) == 2 and all_words(users[0], words1), (users, words1)
        else:  # the first question's words begin the next turn: none lost, none twice
            assert len(users) == 1, users
            both = spoken_seconds(words1) + spoken_seconds(words2)
            assert abs(spoken_seconds(users[0]) - both) <= 0.3, (users, words1, words2)
    finally:
        await t.close()


async def _outcome(t: Talker, turn: int, deadline: float) -> dict:
    end = time.monotonic() + deadline + 10  # allow slack to report how late it was
    while time.monotonic() < end:
        for e in t.events_all():
            if (e["type"] == "metrics" and e.get("turn") == turn) or (
                e["type"] == "error" and e.get("code") == "model_error"
            ):
                return e
        await asyncio.sleep(0.02)
    raise TimeoutError(f"turn {turn} neither completed nor failed")


@pytest.mark.parametrize(
    ("kind", "when"),
    [
        ("stt", "thinking"),
        ("llm", "reply"),
        ("tts", "audio"),
        ("owner", "reply"),
        ("gateway", "reply"),
        ("redis", "reply"),
    ],
)
async def test_kill_mid_turn(stack, kind, when):
    await _kill_during(stack, kind, when)
