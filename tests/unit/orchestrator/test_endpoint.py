"""End-of-turn detection with the settings the stack runs (`EndpointSettings()`): real Silero
probabilities over real audio, then the edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.orchestrator.config import EndpointSettings
from services.orchestrator.endpoint import EndpointDetector, SpeechStart, TurnEnd
from shared.vad import WINDOW, SileroVad, default_model_path
from tests.support.speech import RATE, concat, have_espeak, noise, silence, speak

try:
    default_model_path()
    HAVE_VAD = True
except FileNotFoundError:
    HAVE_VAD = False

real_audio = pytest.mark.skipif(
    not (HAVE_VAD and have_espeak()), reason="needs the Silero model (faster-whisper) and espeak-ng + sox"
)

SPEECH, QUIET, MAYBE = 0.9, 0.05, 0.42  # synthetic probabilities: above, below, between thresholds


def turn_ends(events) -> list[TurnEnd]:
    return [e for e in events if isinstance(e, TurnEnd)]


def starts(events) -> list[SpeechStart]:
    return [e for e in events if isinstance(e, SpeechStart)]


# ---------------------------------------------------------------- real audio


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def probabilities(vad: SileroVad, samples: np.ndarray) -> np.ndarray:
    samples = np.concatenate([samples, np.zeros(-len(samples) % WINDOW, dtype=np.int16)])
    wins = (samples.astype(np.float32) / 32768.0).reshape(-1, WINDOW)
    stream = vad.new_stream()
    return np.array([vad.process([stream], w[None])[0] for w in wins])


def voiced_span_ms(samples: np.ndarray, offset_s: float) -> tuple[float, float]:
    """Where espeak's waveform is actually audible, in ms of the whole clip."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    return (offset_s * 1000 + loud[0] * 1000 / RATE, offset_s * 1000 + loud[-1] * 1000 / RATE)


@real_audio
def test_three_utterances_with_pauses_are_three_turns(vad):
    texts = [
        "Turn on the kitchen lights",
        "What is the weather like tomorrow",
        "Play some relaxing music please",
    ]
    utterances = [speak(t) for t in texts]
    parts, spans, t = [silence(0.5)], [], 0.5
    for u in utterances:
        spans.append(voiced_span_ms(u, t))
        parts += [u, silence(1.0)]
        t += len(u) / RATE + 1.0
    events = EndpointDetector().feed_many(probabilities(vad, concat(*parts)))

    ends = turn_ends(events)
    assert len(ends) == 3
    assert [type(e) for e in events] == [SpeechStart, TurnEnd] * 3
    for end, start, (voice_on, voice_off) in zip(ends, starts(events), spans, strict=True):
        assert end.reason == "silence"
        assert start.at_ms == end.start_ms
        # each turn is the utterance: begins near its first sound, ends near its last
        assert voice_on - 100 <= end.start_ms <= voice_on + 200
        assert voice_off - 250 <= end.end_ms <= voice_off + 250
        assert end.duration_ms > 1000


@real_audio
def test_silence_starts_no_turn(vad):
    detector = EndpointDetector()
    assert detector.feed_many(probabilities(vad, silence(5.0))) == []
    assert not detector.in_speech and detector.speech_ms == 0


@real_audio
@pytest.mark.parametrize("level,seed", [(0.02, 1), (0.1, 7), (0.3, 3)])
def test_white_noise_starts_no_turn(vad, level, seed):
    events = EndpointDetector().feed_many(probabilities(vad, noise(5.0, level=level, seed=seed)))
    assert events == []


@real_audio
def test_short_blips_never_start_a_turn(vad):
    word = speak("Hello there")
    mid = len(word) // 2
    speech_blip = word[mid - 800 : mid + 800]  # 100 ms cut out of real speech
    t = np.arange(1600) / RATE
    beep = (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)  # 100 ms tone
    click = np.random.default_rng(1).standard_normal(1600) * 20000 * np.exp(-np.arange(1600) / 200.0)
    click = click.clip(-32768, 32767).astype(np.int16)  # a decaying 100 ms click
    for blip in (speech_blip, beep, click):
        probs = probabilities(vad, concat(silence(0.5), blip, silence(1.0), blip, silence(1.0)))
        events = EndpointDetector().feed_many(probs)
        assert events == [], events
    # the speech blip did look like speech to the VAD: the minimum length is what saved us
    assert probabilities(vad, concat(silence(0.5), speech_blip, silence(0.5))).max() > 0.5


@real_audio
def test_max_turn_length_cuts_a_long_utterance(vad):
    long = speak(
        "This is a rather long utterance that keeps going on and on without stopping "
        "so that the maximum turn length has to cut it into pieces"
    )
    probs = probabilities(vad, concat(silence(0.3), long, silence(1.0)))
    config = EndpointSettings(max_turn_ms=2000)
    events = EndpointDetector(config).feed_many(probs)

    ends = turn_ends(events)
    cut = [e for e in ends if e.reason == "max_length"]
    assert len(cut) >= 2
    assert ends[-1].reason == "silence", "the tail of the utterance still ends on silence"
    for e in cut:
        assert config.max_turn_ms <= e.duration_ms < config.max_turn_ms + config.window_ms
    assert all(e.duration_ms < config.max_turn_ms + config.window_ms for e in ends)
    # with the default 30 s limit the same audio is one turn
    assert len(turn_ends(EndpointDetector().feed_many(probs))) == 1


@real_audio
def test_speech_ms_grows_while_the_user_talks(vad):
    probs = probabilities(vad, concat(silence(0.3), speak("Stop talking and listen to me"), silence(0.6)))
    detector = EndpointDetector()
    seen = []
    for p in probs:
        detector.feed(p)
        seen.append(detector.speech_ms)
    assert max(seen) > 1000
    assert seen[-1] == 0 and not detector.in_speech


# ---------------------------------------------------------------- synthetic probabilities


def run(probs, **config) -> list:
    return EndpointDetector(EndpointSettings(**config)).feed_many(probs)


def test_speech_shorter_than_min_speech_is_ignored():
    assert run([QUIET] * 5 + [SPEECH] * 7 + [QUIET] * 20) == []  # 224 ms < 250 ms


def test_speech_start_is_reported_at_the_real_start_once_confirmed():
    detector = EndpointDetector()
    events = []
    for i, p in enumerate([QUIET] * 10 + [SPEECH] * 20):
        new = detector.feed(p)
        if new:
            events.append((i, new))
    # confirmed on the 8th speech window (8 * 32 = 256 ms >= 250), dated to the first
    assert events == [(17, [SpeechStart(at_ms=320)])]
    assert detector.in_speech and detector.speech_ms == 20 * 32


def test_turn_ends_after_end_silence_with_end_at_last_speech_window():
    detector = EndpointDetector()
    assert detector.config.end_silence_ms == 288  # nine windows
    detector.feed_many([QUIET] * 3 + [SPEECH] * 10)
    assert [detector.feed(QUIET) for _ in range(8)] == [[]] * 8  # 256 ms: not yet
    assert detector.silence_ms == 256
    assert detector.feed(QUIET) == [TurnEnd(start_ms=96, end_ms=416, reason="silence")]  # 288 ms
    assert not detector.in_speech and detector.speech_ms == 0


def test_a_pause_shorter_than_end_silence_keeps_the_turn():
    events = run([SPEECH] * 10 + [QUIET] * 8 + [SPEECH] * 10 + [QUIET] * 10)
    assert events == [SpeechStart(0), TurnEnd(0, 28 * 32, "silence")]


def test_by_default_a_decaying_probability_is_silence():
    # no hysteresis in the stack's settings: below the threshold is silence at once
    events = run([SPEECH] * 10 + [MAYBE] * 30)
    assert events == [SpeechStart(0), TurnEnd(0, 10 * 32, "silence")]


def test_hysteresis_between_the_thresholds():
    low = {"neg_threshold": 0.35}  # JARVIS_TURN_NEG_THRESHOLD=0.35, for soft word endings
    # from silence, a middling probability never starts speech
    assert run([MAYBE] * 50, **low) == []
    # once speaking, it keeps the turn going
    events = run([SPEECH] * 10 + [MAYBE] * 30 + [QUIET] * 10, **low)
    assert events == [SpeechStart(0), TurnEnd(0, 40 * 32, "silence")]
    # but after silence has begun it does not resume speech nor reset the silence timer
    events = run([SPEECH] * 10 + [QUIET] * 3 + [MAYBE] * 7, **low)
    assert events == [SpeechStart(0), TurnEnd(0, 10 * 32, "silence")]


def test_a_dropped_candidate_does_not_delay_the_real_start():
    events = run([SPEECH] * 3 + [QUIET] * 10 + [SPEECH] * 8 + [QUIET] * 10)
    assert events == [SpeechStart(13 * 32), TurnEnd(13 * 32, 21 * 32, "silence")]


def test_max_length_cut_then_continuing_speech_starts_a_new_turn():
    events = run([SPEECH] * 75 + [QUIET] * 10, max_turn_ms=1000)
    # 1000 ms is reached at the end of window 32 (1024 ms)
    assert events[:2] == [SpeechStart(0), TurnEnd(0, 1024, "max_length")]
    assert events[2:4] == [SpeechStart(1024), TurnEnd(1024, 2048, "max_length")]
    assert events[4:] == [SpeechStart(2048), TurnEnd(2048, 75 * 32, "silence")]
    # a continuation shorter than min_speech_ms is dropped like any other blip
    assert run([SPEECH] * 70 + [QUIET] * 10, max_turn_ms=1000)[4:] == []


def test_max_length_reached_during_a_pause_cuts_at_the_pause():
    events = run([SPEECH] * 28 + [QUIET] * 8 + [SPEECH] * 10 + [QUIET] * 10, max_turn_ms=1100)
    # the limit (1100 ms) passes in the pause after 896 ms of speech: the turn ends there
    assert events == [
        SpeechStart(0),
        TurnEnd(0, 28 * 32, "max_length"),
        SpeechStart(36 * 32),
        TurnEnd(36 * 32, 46 * 32, "silence"),
    ]


def test_times_follow_the_window_length_not_the_wall_clock():
    events = run([QUIET] * 4 + [SPEECH] * 10 + [QUIET] * 12, window_ms=30, min_speech_ms=240)
    assert events == [SpeechStart(120), TurnEnd(120, 420, "silence")]


def test_reset_drops_an_open_turn_silently():
    detector = EndpointDetector()
    detector.feed_many([SPEECH] * 20)
    assert detector.in_speech
    detector.reset(keep_clock=True)
    assert not detector.in_speech and detector.speech_ms == 0 and detector.now_ms == 20 * 32
    assert detector.feed_many([QUIET] * 20) == []
    assert detector.feed_many([SPEECH] * 8) == [SpeechStart(40 * 32)]
    detector.reset()
    assert detector.now_ms == 0
    assert detector.feed_many([SPEECH] * 8) == [SpeechStart(0)]


def test_speech_ms_counts_candidates_for_barge_in():
    detector = EndpointDetector()
    detector.feed_many([SPEECH] * 4)
    assert not detector.in_speech and detector.speech_ms == 128  # candidate, not a turn yet
    detector.feed_many([SPEECH] * 4)
    assert detector.in_speech and detector.speech_ms == 256


@pytest.mark.parametrize(
    "bad",
    [
        {"threshold": 0.3, "neg_threshold": 0.4},
        {"threshold": 1.5},
        {"window_ms": 0},
        {"min_speech_ms": -1},
        {"max_turn_ms": 100, "min_speech_ms": 250},
    ],
)
def test_nonsense_config_is_refused(bad):
    with pytest.raises(ValueError):
        EndpointSettings(**bad)


@settings(max_examples=300, deadline=None)
@given(
    probs=st.lists(st.sampled_from([0.0, 0.2, 0.36, 0.45, 0.5, 0.7, 1.0]), max_size=400),
    max_turn_ms=st.sampled_from([300.0, 1000.0, 30000.0]),
)
def test_events_always_form_well_nested_turns(probs, max_turn_ms):
    config = EndpointSettings(max_turn_ms=max_turn_ms)
    detector = EndpointDetector(config)
    open_at = None
    last_end = -1.0
    for p in probs:
        for event in detector.feed(p):
            if isinstance(event, SpeechStart):
                assert open_at is None and event.at_ms >= last_end
                assert event.at_ms <= detector.now_ms - config.min_speech_ms
                open_at = event.at_ms
            else:
                assert open_at is not None and event.start_ms == open_at
                assert config.min_speech_ms <= event.duration_ms < max_turn_ms + config.window_ms
                assert event.end_ms <= detector.now_ms
                if event.reason == "silence":
                    assert detector.now_ms - event.end_ms >= config.end_silence_ms
                open_at, last_end = None, event.end_ms
        assert detector.in_speech == (open_at is not None)
