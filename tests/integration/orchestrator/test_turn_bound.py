"""A user who keeps asking while the stack is too slow to answer, through the whole stack on a
real Redis (stub models, real Silero VAD, espeak-ng speech): each question before the reply
continues the turn until it holds JARVIS_MAX_RECORDING_S of audio; then it is answered, and what
follows is the next turn. The stub STT says how long the speech it got was, so the history
shows whether any of it was lost or transcribed twice."""

import asyncio
import json
import re
import time

import numpy as np
import pytest

from services.stt.stub import duration_words
from tests.integration.orchestrator.test_turn_taking import JobSpy
from tests.support.client import Client
from tests.support.speech import RATE, concat, have_espeak, silence, speak
from tests.support.stack import running_stack

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")

BOUND_S = 3.5
QUESTIONS = ["What is the time in Tokyo", "and in Paris", "and in Lima", "and in Cairo", "and in Oslo"]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def slow_stt_stack(tmp_path_factory):
    """Each transcript takes 2 s (stale ones too: on one Redis a cancelled job runs until it
    writes), longer than the user's pauses; a turn holds 3.5 s of audio at most."""
    with running_stack(
        tmp_path_factory.mktemp("bound"),
        profile="stub",
        stub_stt_delay=2.0,
        env={"JARVIS_MAX_RECORDING_S": str(BOUND_S)},
    ) as s:
        yield s


def voiced_s(samples: np.ndarray) -> float:
    """The stub STT's measure of speech: 20 ms frames louder than 1% of full scale."""
    x = samples.astype(np.float32) / 32768.0
    frame = RATE // 50
    n = len(x) // frame
    rms = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    return float((rms > 0.01).sum() * frame / RATE)


def said_s(text: str) -> float:
    """Seconds back from a stub transcript ("I spoke for two point four seconds.")."""
    m = re.search(r"for (\w+) point (\w+) seconds", text)
    assert m, text
    return WORDS.index(m[1]) + WORDS.index(m[2]) / 10


async def test_a_user_who_keeps_asking_gets_bounded_turns_and_every_word_once(slow_stt_stack):
    stack = slow_stt_stack
    spy = JobSpy(stack.redis_url, "stt")
    c = await Client.open(stack.url)
    sid = (await c.start())["session_id"]
    await c.wait_for("state", state="LISTENING")
    questions = [speak(q) for q in QUESTIONS]
    # a pause after each long enough to end a turn (the 1.5 s ceiling: no pause transcript comes
    # back in time), short enough that the next question starts before any reply is heard
    clip = concat(silence(0.3), *[concat(q, silence(1.7)) for q in questions])
    streamer = asyncio.create_task(c.stream(concat(clip, silence(60))))
    try:
        deadline = time.monotonic() + 90
        quiet_since = None
        while time.monotonic() < deadline:  # until every turn is answered and nothing moves
            await asyncio.sleep(0.5)
            states = c.of("state")
            idle = states and states[-1]["state"] == "LISTENING"
            done = len(c.of("vad", speaking=False)) >= len(questions)
            if not (idle and done):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 5:
                break
    finally:
        streamer.cancel()
        jobs = spy.stop()
    await c.close()

    continued = [e for e in c.of("interrupted") if e.get("continued")]
    assert continued, "the stack answered before the user went on: nothing was continued"
    saved = json.loads((stack.workdir / "sessions" / f"{sid}.json").read_text())
    history = [r for r in saved["history"] if r["user"]]
    assert len(history) >= 2  # the turn that reached the bound was answered; the rest followed
    # every second of speech in exactly one turn: none lost, none transcribed twice
    total = sum(said_s(r["user"]) for r in history)
    expected = sum(voiced_s(q) for q in questions)
    assert total == pytest.approx(expected, abs=0.15 * len(history) + 0.2), (
        [r["user"] for r in history],
        duration_words(expected),
    )
    slack = max(len(q) for q in questions) / RATE + 0.3  # the stretch going on at the bound, rolls
    decoded = [j for j in jobs if not j.partial]
    assert decoded
    for j in decoded:
        assert len(j.pcm) / 2 / RATE <= BOUND_S + slack, (len(j.pcm) / 2 / RATE, j.turn, j.pause)
