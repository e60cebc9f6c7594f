"""Speech as people speak it, on the CPU profile's real models (Whisper base, SmolLM2 on
llama.cpp's server, Piper), whose STT is slower than the user's pauses: every word the user
said ends up in a transcript and in history.

Speech is made at test time with Piper's joe voice and espeak-ng voices."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from tests.support.client import Client
from tests.support.speech import RATE, have_espeak, have_piper, normalise, silence, speak, speak_piper
from tests.support.stack import running_stack

pytestmark = [
    pytest.mark.models,
    pytest.mark.skipif(
        not (have_espeak() and have_piper()), reason="espeak-ng, sox and Piper make the speech"
    ),
]


@pytest.fixture(scope="module")
def cpu_stack(tmp_path_factory):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("llama_cpp")
    with running_stack(tmp_path_factory.mktemp("cpu-conv"), profile="cpu", timeout=300) as s:
        yield s


async def _session(url: str) -> Client:
    c = await Client.open(url)
    await c.start()
    await c.wait_for("state", state="LISTENING", timeout=120)
    return c


def _history(stack, c: Client) -> list[dict]:
    sid = c.of("ready")[0]["session_id"]
    path = stack.workdir / "sessions" / f"{sid}.json"
    return json.loads(path.read_text())["history"] if path.exists() else []


async def _wait_history(stack, c: Client, check, timeout: float = 90.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = _history(stack, c)
        busy = c.of("state") and c.of("state")[-1]["state"] in ("THINKING", "SPEAKING")
        if not busy and check(h):
            return h
        await asyncio.sleep(0.3)
    return _history(stack, c)


async def test_a_pause_inside_a_question_keeps_both_halves(cpu_stack):
    c = await _session(cpu_stack.url)
    clip = np.concatenate(
        [
            silence(0.3),
            speak_piper("I was wondering"),
            silence(0.8),
            speak_piper("whether you could tell me the capital of Spain"),
            silence(1.5),
        ]
    )
    streamer = asyncio.create_task(c.stream(np.concatenate([clip, silence(60)])))
    try:
        history = await _wait_history(cpu_stack, c, lambda h: len(h) >= 1)
    finally:
        streamer.cancel()
    assert len(history) == 1, history
    words = normalise(history[0]["user"])
    assert "wondering" in words and "spain" in words, history[0]["user"]
    assert history[0]["assistant"]
    await c.close()


async def test_three_quick_questions_are_all_heard(cpu_stack):
    c = await _session(cpu_stack.url)
    parts = [silence(0.3)]
    for q in (
        speak("What is the weather in London", voice="en-us"),
        speak_piper("And what about Tokyo"),
        speak("And what about Germany", voice="en-gb"),
    ):
        parts += [q, silence(1.2)]
    # each question's words (Whisper base may hear "Berlin" as "Germany")
    questions = ({"london", "weather"}, {"tokyo"}, {"berlin", "germany"})

    def heard_all(h: list[dict]) -> bool:
        said = set(normalise(" ".join(t["user"] for t in h)))
        return all(words & said for words in questions)

    streamer = asyncio.create_task(c.stream(np.concatenate([*parts, silence(90)])))
    try:
        # not "enough words": a quick host saves the first two turns while the third is still
        # being spoken, between two busy states
        history = await _wait_history(cpu_stack, c, heard_all)
    finally:
        streamer.cancel()
    said = set(normalise(" ".join(t["user"] for t in history)))
    for words in questions:
        assert words & said, history
    assert all(t["assistant"] for t in history), history
    await c.close()


async def _long_reply(c: Client) -> None:
    await c.send(
        {
            "type": "text",
            "text": "Tell me a long story about a fox and a crow, in ten sentences.",
            "speak": True,
        }
    )
    await c.wait_for("state", state="SPEAKING", timeout=60)
    await asyncio.sleep(0.8)


async def test_stop_stop_actually_cuts_the_reply_and_the_next_transcript_starts_with_stop(cpu_stack):
    c = await _session(cpu_stack.url)
    await _long_reply(c)
    stop = speak_piper("Stop.")
    clip = np.concatenate(
        [
            stop,
            silence(0.35),
            stop,
            silence(0.35),
            speak_piper("Actually, tell me a joke instead."),
            silence(1.5),
        ]
    )
    spoken_by = time.monotonic() + len(clip) / RATE
    streamer = asyncio.create_task(c.stream(np.concatenate([clip, silence(60)])))
    try:
        await c.wait_for("playback", action="pause", timeout=10)
        await c.wait_for("interrupted", timeout=30)
        # "stop, stop." may end at its pause, and on a quick host even be answered whole before
        # the rest is said; the rest then continues it (same turn number). So: once all of it
        # was said, the turn's last final transcript, answered, is the one that counts
        await asyncio.sleep(max(0.0, spoken_by - time.monotonic()) + 0.5)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            finals = c.of("transcript", final=True, turn=2)
            if finals and any(m["_t"] >= finals[-1]["_t"] for m in c.of("metrics", turn=2)):
                break
            await asyncio.sleep(0.2)
    finally:
        streamer.cancel()
    final = c.of("transcript", final=True, turn=2)[-1]
    words = normalise(final["text"])
    assert words[:1] == ["stop"], final["text"]
    assert "joke" in words, final["text"]
    await c.close()
