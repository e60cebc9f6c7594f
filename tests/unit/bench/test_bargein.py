"""The barge-in benchmark's bookkeeping: where a sound begins, what the stub STT will report for
it, whether a cut kept the words, and how a trial's events read as paused / resumed / cut."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bargein import (
    cough_burst,
    noise_burst,
    onset_sample,
    outcome,
    stub_seconds,
    summarize_kind,
    voiced_seconds,
    words_kept,
)

RATE = 16000


def tone(seconds: float, level: float = 0.2) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)


def test_onset_is_the_first_audible_5_ms():
    x = np.concatenate([np.zeros(1000, np.int16), tone(0.1)])
    assert onset_sample(x) == 960  # the 5 ms window holding sample 1000 starts at 960
    assert onset_sample(np.zeros(4000, np.int16)) is None
    # a sound under -40 dBFS is not yet the user speaking
    assert onset_sample(np.concatenate([tone(0.1, 0.005), tone(0.1)])) == 1600


def test_voiced_seconds_counts_loud_frames_like_the_stub_stt():
    x = np.concatenate([tone(0.5), np.zeros(8000, np.int16), tone(0.3)])
    assert voiced_seconds(x) == pytest.approx(0.8)


def test_stub_seconds_reads_the_stub_transcript():
    assert stub_seconds("I spoke for one point nine seconds.") == 1.9
    assert stub_seconds("I spoke for zero point three seconds") == 0.3
    assert stub_seconds("Stop.") is None


def test_words_kept_on_each_profile():
    assert words_kept("cpu", "No, no.", 0.7, "No, no! Tell me more.")
    assert not words_kept("cpu", "Stop, stop. Actually ...", 1.9, "Actually tell me something else.")
    assert words_kept("cpu", "Stop.", 0.3, None) is None
    assert words_kept("stub", "Stop, stop.", 1.9, "I spoke for one point nine seconds.")
    assert not words_kept("stub", "Stop, stop.", 1.9, "I spoke for zero point three seconds.")


def ev(kind: str, t: float, **kw) -> dict:
    return {"type": kind, "_t": t, **kw}


def test_outcome_pause_then_resume_is_a_backchannel():
    events = [
        ev("state", 9.0, state="SPEAKING"),
        ev("playback", 10.08, turn=1, action="pause"),
        ev("playback", 11.5, turn=1, action="resume"),
    ]
    o = outcome(events, 10.0, 1)
    assert o.paused and o.resumed and not o.cut and not o.reply_ended
    assert round(o.pause_ms or 0) == 80 and round(o.resume_ms or 0) == 1500


def test_outcome_a_cut_and_what_came_before_the_sound():
    events = [
        ev("state", 9.0, state="SPEAKING"),
        ev("playback", 9.5, turn=1, action="pause"),  # before the sound: a false pause
        ev("playback", 9.7, turn=1, action="resume"),
        ev("playback", 10.1, turn=1, action="pause"),
        ev("interrupted", 10.8, turn=1, spoken="Here is"),
        ev("state", 10.81, state="LISTENING"),
        ev("playback", 11.0, turn=2, action="pause"),  # another turn's reply: not this one
    ]
    o = outcome(events, 10.0, 1)
    assert o.pauses_before == 1 and o.paused and o.cut and not o.resumed
    assert round(o.cut_ms or 0) == 800 and not o.reply_ended


def test_outcome_a_reply_that_played_out():
    events = [ev("state", 9.0, state="SPEAKING"), ev("state", 12.0, state="LISTENING")]
    o = outcome(events, 10.0, 1)
    assert o.reply_ended and not o.paused


def test_summarize_kind_leaves_out_broken_trials():
    base = {"paused": True, "pause_ms": 100.0, "cut": True, "cut_ms": 700.0, "resumed": False}
    base |= {"resume_ms": None, "kept": True}
    trials = [
        base,
        {**base, "pause_ms": 400.0, "kept": False},
        {"error": "TimeoutError: no spoken reply"},
        {**base, "invalid": "the reply ended before the sound began"},
    ]
    k = summarize_kind(trials)
    assert (k["trials"], k["valid"], k["errors"], k["invalid"]) == (4, 2, 1, 1)
    assert k["paused"] == 2 and k["within_target"] == 1 and k["pause_ms"]["p50"] == 250.0
    assert (k["cut"], k["kept"], k["kept_of"]) == (2, 1, 2)


def test_noises_and_coughs_are_what_they_say():
    pink = noise_burst("pink", 1, level=0.05)
    rms = np.sqrt(np.mean((pink.astype(np.float64) / 32768) ** 2))
    assert len(pink) == RATE and abs(rms - 0.05) < 0.01
    assert len(noise_burst("office", 2, seconds=0.5)) == RATE // 2
    one, two = cough_burst(3), cough_burst(3, coughs=2)
    assert 0.15 * RATE <= len(one) <= 0.28 * RATE and len(two) > len(one) + 0.2 * RATE
    voiced = cough_burst(4, vowel=tone(0.3))
    assert len(voiced) <= (0.04 + 0.2) * RATE and np.abs(voiced).max() > 0.3 * 32767 * 0.99
