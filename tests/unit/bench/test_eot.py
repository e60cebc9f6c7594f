"""The end-of-turn benchmark's replay: a score arrives when its computation would have finished,
speech that resumed meanwhile makes it stale, and the figures count what a user would notice."""

from __future__ import annotations

import numpy as np
import pytest

from bench.eot import ClipResult, Score, Strategy, replay, summarize_strategy, transcript_ready
from bench.eot_corpus import LEAD_IN_S, RATE, Utterance, find_cut, pink_noise
from services.orchestrator.config import EndpointSettings

W = 32


class FixedScores:
    """Stands in for the bench's Scorer: every pause gets the same answer after `latency_ms`."""

    def __init__(self, p: float, text: str, latency_ms: float) -> None:
        self.p, self.t, self.latency = p, text, latency_ms
        self.asked = 0

    def audio(self, utt, start_ms, at_ms) -> Score:
        self.asked += 1
        return Score(self.p, self.latency, self.latency)

    def text(self, utt, start_ms, at_ms) -> Score:
        return Score(self.t, self.latency, self.latency)


def utterance(pause_windows: int) -> tuple[Utterance, np.ndarray]:
    """Probabilities of lead-in quiet, 1 s of speech, a pause, 1 s of speech, 3 s of quiet."""
    lead = int(LEAD_IN_S * 1000 / W)
    probs = np.array([0.02] * lead + [0.95] * 31 + [0.02] * pause_windows + [0.95] * 31 + [0.02] * 94)
    speech_end = (lead + 62 + pause_windows) * W * RATE // 1000
    utt = Utterance(
        "test/paused/s0", "words", "test", "paused", None, None, pause_windows * W / 1000,
        speech_end, (0, 0), np.zeros(len(probs) * 512, np.int16),
    )  # fmt: skip
    return utt, probs


ENDPOINT = EndpointSettings(threshold=0.5, neg_threshold=0.5, min_speech_ms=250, end_silence_ms=288)


def test_today_cuts_a_long_pause_and_smart_turn_waits_when_told_incomplete():
    utt, probs = utterance(pause_windows=25)  # 800 ms
    today = replay(Strategy("silence", "silence", 288), utt, probs, FixedScores(0.0, "", 0), ENDPOINT)
    assert today.turns == 2
    waited = replay(Strategy("st", "smart_turn"), utt, probs, FixedScores(0.1, "", 80), ENDPOINT)
    assert waited.turns == 1
    assert waited.delay_ms == pytest.approx(1504, abs=W)  # the ceiling ended it
    eager = replay(Strategy("st", "smart_turn"), utt, probs, FixedScores(0.9, "", 80), ENDPOINT)
    assert eager.turns == 2
    assert eager.delay_ms == pytest.approx(224 + 80, abs=W)  # candidate + the score's latency


def test_a_score_slower_than_the_pause_is_stale():
    utt, probs = utterance(pause_windows=15)  # 480 ms: the score (224 + 400 ms) arrives after speech resumed
    r = replay(Strategy("st", "smart_turn"), utt, probs, FixedScores(0.99, "", 400), ENDPOINT)
    assert r.turns == 1
    assert r.decisions == 2


def test_a_transcript_that_ended_the_turn_is_in_hand_at_once():
    utt, probs = utterance(pause_windows=25)
    cues = replay(
        Strategy("cue", "transcript"), utt, probs, FixedScores(0.0, "Tell me a joke.", 150), ENDPOINT
    )
    assert cues.held_transcript_ms == cues.delay_ms
    assert transcript_ready(cues, {}) == cues.delay_ms
    today = replay(Strategy("silence", "silence", 288), utt, probs, FixedScores(0.0, "", 0), ENDPOINT)
    assert today.held_transcript_ms is None
    assert transcript_ready(today, {utt.key: 1000.0}) == today.delay_ms + 1000.0


def test_the_summary_counts_cut_offs_per_kind():
    def r(kind, turns, delay):
        return ClipResult("k", kind, False, turns, 0, delay, None, 1, 80.0)

    s = summarize_strategy(
        Strategy("x", "smart_turn"),
        [r("paused", 2, 300), r("paused", 1, 1500), r("complete", 1, 300), r("complete", 0, None)],
        {},
    )
    assert (s["cut_off_paused"], s["paused_clips"], s["cut_off_complete"], s["complete_clips"]) == (
        1,
        2,
        0,
        2,
    )
    assert (s["late"], s["missed"], s["decisions"], s["cpu_ms_per_decision"]) == (1, 1, 4, 80.0)


def test_the_cut_goes_into_the_quiet_between_the_words():
    rng = np.random.default_rng(1)
    tone = (np.sin(np.arange(8000) * 0.2) * 8000).astype(np.int16)
    gap = (rng.standard_normal(800) * 20).astype(np.int16)  # 50 ms of near-silence
    samples = np.concatenate([tone, gap, tone])
    words = [("hello", 0.0, 0.49), ("there", 0.56, 1.05)]  # Whisper's times, a little off
    cut = find_cut(samples, "hello there", 1, words)
    assert 8000 <= cut <= 8800


def test_pink_noise_is_unit_rms_and_tilted():
    x = pink_noise(RATE * 2, seed=3)
    assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-3)
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    assert spec[(f > 100) & (f < 200)].mean() > 10 * spec[(f > 4000) & (f < 8000)].mean()
