"""Speech as people speak it, through the whole stack (real Redis, real Silero VAD, stub models
whose STT takes a second like the CPU profile's): a pause inside a question, quick
follow-ups, "stop, stop, actually …" over a reply, a cough over a reply, noise. The speech is
made at test time with Piper's joe voice and several espeak-ng voices.

The stub STT's transcript says how long the voiced audio it got was ("I spoke for two point
three seconds"), so a test can tell whether a transcript covered all of the user's words."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from tests.support.client import Client
from tests.support.speech import (
    cough,
    have_espeak,
    have_piper,
    mix,
    office_noise,
    pink_noise,
    silence,
    speak,
    speak_piper,
)
from tests.support.stack import running_stack

pytestmark = pytest.mark.skipif(
    not (have_espeak() and have_piper()), reason="espeak-ng, sox and Piper make the speech"
)

LONG_TEXT = (
    "Here is the first sentence of a long answer. Here is the second one, a little longer than that. "
    "And a third sentence follows. Then a fourth. And finally a fifth sentence to end it."
)
_WORDS = {
    w: i
    for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
}


def voice(name: str, text: str) -> np.ndarray:
    return speak_piper(text) if name == "piper" else speak(text, voice=name)


def spoken_seconds(text: str) -> float:
    """The stub STT's "I spoke for two point three seconds" -> 2.3."""
    words = text.lower().replace("i spoke for", "").split()
    return _WORDS[words[0]] + _WORDS[words[2]] / 10


def voiced_seconds(samples: np.ndarray) -> float:
    """What the stub STT counts: 20 ms frames above -40 dBFS."""
    x = samples.astype(np.float32) / 32768
    n = len(x) // 320
    return float((np.sqrt((x[: n * 320].reshape(n, 320) ** 2).mean(axis=1)) > 0.01).sum() * 0.02)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("conv"), profile="stub", stub_stt_delay=1.0) as s:
        yield s


async def _session(url: str) -> Client:
    c = await Client.open(url)
    await c.start()
    await c.wait_for("state", state="LISTENING")
    return c


def _history(stack, c: Client) -> list[dict]:
    sid = c.of("ready")[0]["session_id"]
    path = stack.workdir / "sessions" / f"{sid}.json"
    return json.loads(path.read_text())["history"] if path.exists() else []


async def _settled_history(stack, c: Client, turns: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = _history(stack, c)
        if len(h) >= turns and not (c.of("state") and c.of("state")[-1]["state"] in ("THINKING", "SPEAKING")):
            return h
        await asyncio.sleep(0.2)
    return _history(stack, c)


@pytest.mark.parametrize("who", ["piper", "en-gb"])
async def test_a_pause_inside_a_question_is_one_turn_with_all_its_words(stack, who):
    c = await _session(stack.url)
    first = voice(who, "I was wondering")
    second = voice(who, "whether you could tell me the capital of Spain")
    await c.stream(np.concatenate([silence(0.3), first, silence(0.8), second, silence(1.0)]))
    await c.wait_for("metrics", timeout=30)
    await c.stream(silence(1.0))
    history = await _settled_history(stack, c, 1)
    assert len(history) == 1, history  # one user turn, one reply
    # the end of turn waited for the thought, or a half-answer started and was never heard
    assert all(e.get("continued") for e in c.of("interrupted"))
    # both halves were transcribed together
    heard = spoken_seconds(history[0]["user"])
    assert heard == pytest.approx(voiced_seconds(first) + voiced_seconds(second), abs=0.35)
    assert history[0]["assistant"] and not history[0]["interrupted"]
    finals = c.of("transcript", final=True)
    assert {e["turn"] for e in finals} == {1} and finals[-1]["text"] == history[0]["user"]
    await c.close()


async def test_quick_follow_ups_are_all_heard_and_answered(stack):
    c = await _session(stack.url)
    questions = [
        voice("en-us", "What time is it in Tokyo"),
        voice("piper", "And in Paris"),
        voice("en-gb-scotland", "How about New York"),
    ]
    parts = [silence(0.3)]
    for q in questions:
        parts += [q, silence(1.2)]
    await c.stream(np.concatenate([*parts, silence(1.0)]))
    await c.wait_for("metrics", timeout=40)
    history = await _settled_history(stack, c, 1, timeout=30)
    total = sum(voiced_seconds(q) for q in questions)
    # every question's words are in history (alone or merged), and every user turn was answered
    assert sum(spoken_seconds(t["user"]) for t in history) == pytest.approx(total, abs=0.5)
    assert all(t["assistant"] for t in history), history
    await c.close()


async def test_stop_stop_actually_pauses_at_once_cuts_the_reply_and_keeps_every_word(stack):
    c = await _session(stack.url)
    await c.send({"type": "text", "text": LONG_TEXT, "speak": True})
    await c.wait_for("state", state="SPEAKING")
    await asyncio.sleep(1.0)  # the user hears a second of it
    stop = speak_piper("Stop.")
    words = [stop, stop, speak_piper("Actually, tell me something else instead.")]
    clip = np.concatenate([words[0], silence(0.35), words[1], silence(0.35), words[2], silence(1.5)])
    onset = int(np.flatnonzero(np.abs(clip) > 1000)[0])  # the first "stop"'s first sample
    started = time.time()
    streamer = asyncio.create_task(c.stream(np.concatenate([clip, silence(2.0)])))
    pause = await c.wait_for("playback", action="pause", timeout=5)
    assert pause["_t"] - (started + onset / 16000) < 0.3  # it stopped talking within 300 ms
    cut = await c.wait_for("interrupted", timeout=10)
    assert not cut.get("continued")
    await streamer
    final = await c.wait_for("transcript", final=True, turn=2, timeout=20)
    # the next turn is all of it, "stop, stop" included
    assert spoken_seconds(final["text"]) == pytest.approx(sum(voiced_seconds(w) for w in words), abs=0.35)
    history = await _settled_history(stack, c, 2)
    assert history[0]["interrupted"] and history[0]["assistant"] == cut["spoken"]
    await c.close()


async def test_a_cough_over_the_reply_pauses_it_and_it_completes(stack):
    c = await _session(stack.url)
    await c.send({"type": "text", "text": LONG_TEXT, "speak": True})
    await c.wait_for("state", state="SPEAKING")
    await asyncio.sleep(0.8)
    blip = speak("hm")[:2400]  # 150 ms that Silero hears as speech: under the minimum for a turn
    await c.stream(np.concatenate([cough(), silence(0.8), blip, silence(0.8)]))
    metrics = await c.wait_for("metrics", timeout=30)
    assert c.of("interrupted") == []
    assert c.of("playback", action="pause") and c.of("playback")[-1]["action"] == "resume"
    assert not metrics["interrupted"]
    await c.stream(silence(6.0), realtime=False)
    history = await _settled_history(stack, c, 1)
    assert (
        history[0]["assistant"].startswith("You said: Here is the first sentence")
        and not history[0]["interrupted"]
    )
    await c.close()


@pytest.mark.parametrize("kind", ["pink", "office"])
async def test_noise_alone_gives_no_turn(stack, kind):
    c = await _session(stack.url)
    audio = pink_noise(5.0, level=0.08) if kind == "pink" else office_noise(5.0, level=0.1)
    await c.stream(audio, realtime=False)
    await asyncio.sleep(1.5)
    assert c.of("transcript") == [] and c.of("vad") == []
    await c.close()


async def test_a_question_over_office_noise_is_heard_and_answered(stack):
    c = await _session(stack.url)
    question = voice("en-us", "Could you please turn the heating up a little")
    background = office_noise(len(question) / 16000 + 2.0, level=0.1)
    noisy = mix(np.concatenate([silence(0.5), question, silence(1.5)]), background, snr_db=10)
    await c.stream(noisy)
    await c.wait_for("metrics", timeout=30)
    finals = c.of("transcript", final=True)
    assert len(finals) == 1 and spoken_seconds(finals[0]["text"]) >= voiced_seconds(question) - 0.3
    await c.close()
