"""The adaptive end of turn: a finished thought ends at a short pause, an unfinished one waits
for the ceiling, a late score never cuts speech that went on; real Silero on real speech too."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.orchestrator.config import EndpointSettings
from services.orchestrator.end_of_turn import (
    Decision,
    EndOfTurnConfig,
    EndOfTurnPolicy,
    ScoreNeeded,
)
from services.orchestrator.endpoint import EndpointDetector, SpeechStart, TurnEnd
from tests.support.speech import concat, have_espeak, silence, speak

SPEECH, QUIET, MAYBE = 0.9, 0.05, 0.42  # above threshold, below neg_threshold, in between
W = 32.0  # ms per window
ENDPOINT = EndpointSettings(threshold=0.5, neg_threshold=0.35, min_speech_ms=250, end_silence_ms=288)


def policy(mode="smart_turn", candidate_ms=224, ceiling_ms=1504, **kw) -> EndOfTurnPolicy:
    return EndOfTurnPolicy(
        ENDPOINT, EndOfTurnConfig(mode=mode, candidate_ms=candidate_ms, ceiling_ms=ceiling_ms, **kw)
    )


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def speak_for(pol: EndOfTurnPolicy, ms: float) -> list:
    return pol.feed_many([SPEECH] * int(ms / W))


def quiet_until(pol: EndOfTurnPolicy, kind, limit_ms: float = 5000) -> tuple[list, list]:
    """Feed silence until an event of `kind` appears; (all events, the matching ones)."""
    events: list = []
    for _ in range(int(limit_ms / W)):
        events += pol.feed(QUIET)
        if of(events, kind):
            break
    return events, of(events, kind)


# ---------------------------------------------------------------- the candidate and the score


def test_a_pause_asks_for_a_score_once_at_the_candidate_silence():
    pol = policy()
    ev = pol.feed_many([QUIET] * 5) + speak_for(pol, 1024)
    (start,) = of(ev, SpeechStart)
    assert start.at_ms == 5 * W
    events, (ask,) = quiet_until(pol, ScoreNeeded)
    assert ask.start_ms == 5 * W
    assert ask.end_ms == 5 * W + 1024
    assert ask.at_ms - ask.end_ms == 224  # 7 windows of silence
    assert ask.audio and not ask.text
    assert pol.pending == ask.request
    more = pol.feed_many([QUIET] * 10)  # the same pause is never asked about twice
    assert not of(more, ScoreNeeded)


def test_complete_ends_the_turn_at_once_with_the_speech_span():
    pol = policy()
    speak_for(pol, 800)
    _, (ask,) = quiet_until(pol, ScoreNeeded)
    pol.feed_many([QUIET] * 2)  # the score takes two windows to come back
    (end,) = pol.score(ask.request, audio=0.93)
    assert isinstance(end, TurnEnd)
    assert (end.start_ms, end.end_ms, end.reason) == (ask.start_ms, ask.end_ms, "silence")
    assert pol.last_decision == Decision("complete", 224 + 2 * W, 0.93, None)
    assert not pol.in_speech and pol.pending is None
    # the stream clock goes on and the next utterance is a new turn
    ev = speak_for(pol, 500)
    (start,) = of(ev, SpeechStart)
    assert start.at_ms == pol.now_ms - 500 + (500 % W)


def test_incomplete_waits_for_the_ceiling():
    pol = policy()
    speak_for(pol, 800)
    _, (ask,) = quiet_until(pol, ScoreNeeded)
    assert pol.score(ask.request, audio=0.12) == []
    assert pol.in_speech and pol.pending is None
    events, (end,) = quiet_until(pol, TurnEnd)
    assert end.end_ms == ask.end_ms and end.reason == "silence"
    assert pol.now_ms - end.end_ms == 1504
    assert pol.last_decision == Decision("ceiling", 1504, 0.12, None)


def test_speech_after_a_pause_keeps_one_turn_and_a_late_score_cannot_cut_it():
    pol = policy()
    speak_for(pol, 800)
    _, (first,) = quiet_until(pol, ScoreNeeded)
    ev = pol.feed_many([QUIET] * 3) + speak_for(pol, 600)  # "... whether you could tell me"
    assert not of(ev, TurnEnd) and not of(ev, SpeechStart)
    assert pol.pending is None
    assert pol.score(first.request, audio=0.99) == []  # stale: the user carried on
    assert pol.in_speech
    _, (second,) = quiet_until(pol, ScoreNeeded)
    assert second.request != first.request
    assert second.start_ms == first.start_ms and second.end_ms > first.end_ms
    assert pol.score(first.request, audio=0.99) == []  # still stale
    (end,) = pol.score(second.request, audio=0.8)
    assert (end.start_ms, end.end_ms) == (first.start_ms, second.end_ms)


def test_a_score_after_the_ceiling_or_a_reset_changes_nothing():
    pol = policy(ceiling_ms=480)
    speak_for(pol, 800)
    _, (ask,) = quiet_until(pol, ScoreNeeded)
    quiet_until(pol, TurnEnd)
    assert pol.score(ask.request, audio=0.99) == []
    assert pol.last_decision is not None and pol.last_decision.reason == "ceiling"

    speak_for(pol, 800)
    _, (ask,) = quiet_until(pol, ScoreNeeded)
    pol.reset(keep_clock=True)
    assert pol.score(ask.request, audio=0.99) == [] and pol.pending is None


def test_no_score_means_wait_never_cut():
    """A failed Smart Turn call is answered with nothing: the ceiling ends the turn."""
    pol = policy(mode="smart_turn_unless_cue")
    speak_for(pol, 800)
    _, (ask,) = quiet_until(pol, ScoreNeeded)
    assert pol.score(ask.request) == []
    _, (end,) = quiet_until(pol, TurnEnd)
    assert pol.last_decision is not None and pol.last_decision.reason == "ceiling"


def test_unknown_requests_and_bad_probabilities():
    pol = policy()
    assert pol.score(12345, audio=0.9) == []
    speak_for(pol, 800)
    _, (ask,) = quiet_until(pol, ScoreNeeded)
    with pytest.raises(ValueError, match="probability"):
        pol.score(ask.request, audio=1.5)
    assert pol.pending == ask.request  # a refused score leaves the request open


def test_short_blips_and_unconfirmed_speech_are_never_scored():
    pol = policy()
    ev = pol.feed_many([SPEECH] * 3 + [QUIET] * 60)  # 96 ms: a click, not a turn
    assert not of(ev, ScoreNeeded) and not of(ev, SpeechStart) and not of(ev, TurnEnd)


def test_in_between_probabilities_do_not_restart_the_pause():
    """Hysteresis as the detector has it: after silence began, a 'maybe' window is silence."""
    pol = policy()
    speak_for(pol, 800)
    ev = pol.feed_many([QUIET] * 3 + [MAYBE] * 2 + [QUIET] * 2)
    (ask,) = of(ev, ScoreNeeded)
    assert ask.at_ms - ask.end_ms == 224


def test_max_length_passes_through_and_drops_the_pending_request():
    pol = EndOfTurnPolicy(
        EndpointSettings(min_speech_ms=64, max_turn_ms=1600), EndOfTurnConfig(mode="smart_turn")
    )
    speak_for(pol, 800)
    _, (ask,) = quiet_until(pol, ScoreNeeded)
    ev = speak_for(pol, 1000)
    (end,) = of(ev, TurnEnd)
    assert end.reason == "max_length"
    assert pol.last_decision is not None and pol.last_decision.reason == "max_length"
    assert pol.score(ask.request, audio=0.99) == []


def test_the_ceiling_replaces_end_silence_in_adaptive_modes_only():
    assert policy().endpoint.end_silence_ms == 1504
    assert EndOfTurnPolicy(ENDPOINT, EndOfTurnConfig(mode="silence")).endpoint.end_silence_ms == 288
    assert EndOfTurnConfig().mode == "transcript"  # the default the benchmark chose
    assert policy().endpoint.min_speech_ms == ENDPOINT.min_speech_ms


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "smart_turn", "candidate_ms": 1504, "ceiling_ms": 1504},
        {"candidate_ms": -1},
        {"complete_threshold": 1.5},
        {"mode": "telepathy"},
        {"surprise": 1},
    ],
)
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValidationError):
        EndOfTurnConfig(**kw)


def test_settings_are_immutable():
    cfg = EndOfTurnConfig()
    with pytest.raises(ValidationError):
        cfg.mode = "smart_turn"  # type: ignore[misc]


# ---------------------------------------------------------------- what "complete" means per mode


def decide(mode: str, audio: float | None, text: str | None) -> bool:
    pol = policy(mode=mode)
    speak_for(pol, 800)
    _, (ask,) = quiet_until(pol, ScoreNeeded)
    return bool(pol.score(ask.request, audio=audio, text=text))


@pytest.mark.parametrize(
    ("mode", "audio", "text", "ends"),
    [
        ("smart_turn", 0.5, None, True),
        ("smart_turn", 0.49, None, False),
        ("smart_turn", None, "Tell me a joke.", False),  # this mode does not read words
        ("transcript", None, "Tell me a joke.", True),
        ("transcript", None, "I was wondering", False),
        ("transcript", None, "tell me a joke", False),  # no opinion: wait
        ("transcript", 0.99, "", False),
        ("smart_turn_unless_cue", 0.9, "Tell me a joke.", True),
        ("smart_turn_unless_cue", 0.9, "turn off the lights", True),  # no veto without a cue
        ("smart_turn_unless_cue", 0.9, "I went to the store and so", False),  # the words veto
        ("smart_turn_unless_cue", 0.2, "Tell me a joke.", False),
        ("smart_turn_unless_cue", None, "Tell me a joke.", True),  # Smart Turn failed: words only
        ("smart_turn_unless_cue", None, None, False),
        ("cue_else_smart_turn", 0.2, "Tell me a joke.", True),  # the words decide
        ("cue_else_smart_turn", 0.9, "because", False),
        ("cue_else_smart_turn", 0.9, "", True),  # no words: the audio decides
        ("cue_else_smart_turn", 0.1, "", False),
    ],
)
def test_what_complete_means(mode, audio, text, ends):
    assert decide(mode, audio, text) is ends


def test_each_mode_asks_for_what_it_reads():
    wants = {
        m: (EndOfTurnConfig(mode=m).wants_audio, EndOfTurnConfig(mode=m).wants_text)
        for m in ("silence", "smart_turn", "transcript", "smart_turn_unless_cue", "cue_else_smart_turn")
    }
    assert wants == {
        "silence": (False, False),
        "smart_turn": (True, False),
        "transcript": (False, True),
        "smart_turn_unless_cue": (True, True),
        "cue_else_smart_turn": (True, True),
    }


def test_the_threshold_is_a_setting():
    pol = policy(complete_threshold=0.8)
    speak_for(pol, 800)
    _, (ask,) = quiet_until(pol, ScoreNeeded)
    assert pol.score(ask.request, audio=0.7) == []


# ---------------------------------------------------------------- silence mode is today's detector


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([SPEECH, QUIET, MAYBE, 0.6, 0.2]), max_size=400))
def test_silence_mode_is_exactly_the_detector(probs):
    pol = EndOfTurnPolicy(ENDPOINT, EndOfTurnConfig(mode="silence"))
    det = EndpointDetector(ENDPOINT)
    for p in probs:
        assert pol.feed(p) == det.feed(p)
        assert (pol.in_speech, pol.speech_ms, pol.silence_ms) == (
            det.in_speech,
            det.speech_ms,
            det.silence_ms,
        )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([SPEECH, QUIET, MAYBE, 0.6, 0.2]), max_size=400),
    st.lists(st.floats(0, 1), min_size=1, max_size=20),
)
def test_adaptive_turns_are_the_ceiling_detectors_turns_or_end_earlier(probs, scores):
    """Whatever the scores: turns never overlap or run backwards, and an early end only
    happens in a pause of at least the candidate silence."""
    pol = policy()
    spans: list[tuple[float, float]] = []
    it = iter(scores * 100)
    for p in probs:
        for ev in pol.feed(p):
            if isinstance(ev, ScoreNeeded):
                for end in pol.score(ev.request, audio=next(it)):
                    spans.append((end.start_ms, end.end_ms))
                    assert pol.now_ms - end.end_ms >= 224
            elif isinstance(ev, TurnEnd):
                spans.append((ev.start_ms, ev.end_ms))
    for (a0, a1), (b0, b1) in zip(spans, spans[1:], strict=False):
        assert a0 < a1 <= b0 < b1


# ---------------------------------------------------------------- real Silero, real speech


@pytest.fixture(scope="module")
def paused_question():
    """ "I was wondering" ... 0.8 s ... "whether you could tell me the capital of Spain", then quiet."""
    if not have_espeak():
        pytest.skip("espeak-ng and sox are needed for real speech")
    try:
        from shared.vad import WINDOW, SileroVad
    except ImportError as exc:  # pragma: no cover - the base install has onnxruntime
        pytest.skip(str(exc))
    first, second = speak("I was wondering"), speak("whether you could tell me the capital of Spain")
    audio = concat(silence(0.3), first, silence(0.8), second, silence(2.0))
    audio = np.concatenate([audio, np.zeros(-len(audio) % WINDOW, np.int16)])
    vad = SileroVad()
    stream = vad.new_stream()
    wins = (audio.astype(np.float32) / 32768).reshape(-1, WINDOW)
    probs = [float(vad.process([stream], w[None])[0]) for w in wins]
    pause_at_ms = (0.3 * 16000 + len(first)) / 16
    return probs, pause_at_ms


def run(pol: EndOfTurnPolicy, probs: list[float], answer) -> list[TurnEnd]:
    ends = []
    for p in probs:
        for ev in pol.feed(p):
            if isinstance(ev, ScoreNeeded):
                ends += pol.score(ev.request, audio=answer(ev))
            elif isinstance(ev, TurnEnd):
                ends.append(ev)
    return ends


def test_today_a_mid_thought_pause_splits_the_question(paused_question):
    probs, _ = paused_question
    ends = run(EndOfTurnPolicy(ENDPOINT, EndOfTurnConfig(mode="silence")), probs, None)
    assert len(ends) == 2


def test_waiting_at_an_unfinished_pause_keeps_one_turn(paused_question):
    probs, pause_at_ms = paused_question
    asked: list[ScoreNeeded] = []

    def answer(ev: ScoreNeeded) -> float:
        asked.append(ev)
        return 0.1 if ev.end_ms < pause_at_ms + 300 else 0.9  # unfinished at the pause, finished at the end

    ends = run(policy(), probs, answer)
    assert len(ends) == 1
    assert len(asked) == 2
    (end,) = ends
    assert end.start_ms < pause_at_ms < end.end_ms
    assert end.end_ms == asked[-1].end_ms  # ended on the score, not at the ceiling
