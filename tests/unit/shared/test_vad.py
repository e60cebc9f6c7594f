"""Batched Silero VAD: same answers as the shipped single-stream graph, on real audio."""

from __future__ import annotations

import numpy as np
import pytest

from shared.vad import WINDOW, SileroVad, VadStream, default_model_path
from tests.support.speech import concat, have_espeak, noise, silence, speak

try:
    default_model_path()
except FileNotFoundError as exc:  # faster-whisper (the cpu extra) ships the model
    pytest.skip(f"Silero VAD model unavailable: {exc}", allow_module_level=True)

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox are needed for real speech")


def windows(samples: np.ndarray) -> np.ndarray:
    """int16 samples -> float32 [n, 512] in [-1, 1], zero-padded to whole windows."""
    samples = np.concatenate([samples, np.zeros(-len(samples) % WINDOW, dtype=np.int16)])
    return (samples.astype(np.float32) / 32768.0).reshape(-1, WINDOW)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    """Streams of different content and length, as [n, 512] float32 windows."""
    out = {
        "silence": windows(silence(1.5)),
        "noise": windows(noise(2.0)),
    }
    if have_espeak():
        out["speech"] = windows(
            concat(silence(0.3), speak("Hello there, how are you doing today?"), silence(0.6))
        )
        spoken = speak("Set a timer for ten minutes")
        out["noisy_speech"] = windows(
            concat(
                noise(0.4, level=0.02), spoken + noise(len(spoken) / 16000, level=0.01, seed=2), silence(0.3)
            )
        )
        out["speech_2"] = windows(concat(speak("Turn off the lights in the kitchen"), silence(1.0)))
    return out


def reference_probs(vad: SileroVad, wins: np.ndarray) -> np.ndarray:
    stream = vad.new_stream()
    return np.array([vad.process_reference(stream, w) for w in wins], dtype=np.float32)


@needs_espeak
def test_batched_patched_graph_matches_unpatched_window_by_window(vad, clips):
    names = list(clips)
    assert len(names) >= 5
    expected = {name: reference_probs(vad, clips[name]) for name in names}

    streams = {name: vad.new_stream() for name in names}
    got: dict[str, list[float]] = {name: [] for name in names}
    batch_sizes = set()
    for t in range(max(len(w) for w in clips.values())):
        ready = [name for name in names if t < len(clips[name])]
        ready = ready[t % len(ready) :] + ready[: t % len(ready)]  # rows change place every tick
        probs = vad.process([streams[n] for n in ready], np.stack([clips[n][t] for n in ready]))
        assert probs.dtype == np.float32 and probs.shape == (len(ready),)
        batch_sizes.add(len(ready))
        for name, p in zip(ready, probs, strict=True):
            got[name].append(float(p))

    assert len(batch_sizes) >= 3, "streams of different length should exercise several batch sizes"
    for name in names:
        np.testing.assert_allclose(np.array(got[name]), expected[name], atol=1e-5, rtol=0, err_msg=name)


@needs_espeak
def test_speech_scores_high_and_silence_or_noise_low(vad, clips):
    speech = reference_probs(vad, clips["speech"])
    assert speech.max() > 0.9
    assert (speech > 0.5).sum() * WINDOW / 16000 > 1.0, "over a second of the utterance is speech"
    assert speech[:5].max() < 0.2, "the leading 0.3 s of silence is not speech"
    assert speech[-10:].max() < 0.2, "the trailing silence is not speech"

    assert reference_probs(vad, clips["silence"]).max() < 0.1
    assert reference_probs(vad, clips["noise"]).max() < 0.35
    # Loud white noise is not speech either, though single windows may spike.
    loud = reference_probs(vad, windows(noise(4.0, level=0.3, seed=3)))
    assert (loud > 0.5).mean() < 0.05 and np.median(loud) < 0.1


@needs_espeak
def test_streams_are_independent_of_interleaving_and_grouping(vad, clips):
    names = ["speech", "noise", "speech_2", "silence"]
    n = min(len(clips[name]) for name in names)

    def run(schedule) -> dict[str, np.ndarray]:
        streams = {name: vad.new_stream() for name in names}
        out: dict[str, list[float]] = {name: [] for name in names}
        for t in range(n):
            for group in schedule(t):
                probs = vad.process([streams[g] for g in group], np.stack([clips[g][t] for g in group]))
                for g, p in zip(group, probs, strict=True):
                    out[g].append(float(p))
        return {k: np.array(v) for k, v in out.items()}

    rng = np.random.default_rng(5)

    def random_groups(t):
        order = list(rng.permutation(names))
        cut = int(rng.integers(1, len(order)))
        return [order[:cut], order[cut:]]

    together = run(lambda t: [names])
    reversed_rows = run(lambda t: [names[::-1]])
    one_by_one = run(lambda t: [[name] for name in (names if t % 2 else names[::-1])])
    shuffled = run(random_groups)
    for name in names:
        for other in (reversed_rows, one_by_one, shuffled):
            np.testing.assert_allclose(other[name], together[name], atol=1e-5, rtol=0, err_msg=name)
    # and a stream's result does not depend on what its neighbours hear
    assert together["speech"].max() > 0.9 and together["silence"].max() < 0.1


@needs_espeak
def test_reset_makes_a_stream_fresh(vad, clips):
    stream = vad.new_stream()
    for w in clips["speech"][:40]:
        vad.process([stream], w[None])
    assert stream.windows == 40 and np.abs(stream.h).sum() > 0
    stream.reset()
    assert stream.windows == 0
    assert not stream.h.any() and not stream.c.any() and not stream.context.any()

    fresh = vad.new_stream()
    for w in clips["speech_2"][:30]:
        a = vad.process([stream], w[None])
        b = vad.process([fresh], w[None])
        assert a[0] == pytest.approx(b[0], abs=1e-6)


def test_context_is_the_tail_of_the_previous_window(vad):
    stream = vad.new_stream()
    w = np.linspace(-0.5, 0.5, WINDOW, dtype=np.float32)[None]
    vad.process([stream], w)
    np.testing.assert_array_equal(stream.context, w[0, -64:])


def test_int16_windows_are_scaled_like_float(vad):
    pcm = noise(0.5, level=0.05)[: 15 * WINDOW].reshape(-1, WINDOW)
    a, b = vad.new_stream(), vad.new_stream()
    for row in pcm:
        pa = vad.process([a], row[None])
        pb = vad.process([b], (row.astype(np.float32) / 32768.0)[None])
        assert pa[0] == pytest.approx(pb[0], abs=1e-6)


def test_batches_larger_than_the_preallocated_buffers(vad):
    streams = [vad.new_stream() for _ in range(40)]
    rng = np.random.default_rng(1)
    batch = (rng.standard_normal((40, WINDOW)) * 0.05).astype(np.float32)
    probs = vad.process(streams, batch)
    assert probs.shape == (40,)
    ref = [vad.process_reference(vad.new_stream(), row) for row in batch]
    np.testing.assert_allclose(probs, ref, atol=1e-5, rtol=0)


def test_bad_calls_are_refused(vad):
    a, b = vad.new_stream(), vad.new_stream()
    with pytest.raises(ValueError):
        vad.process([a, b], np.zeros((1, WINDOW), np.float32))
    with pytest.raises(ValueError):
        vad.process([a], np.zeros((1, 480), np.float32))
    with pytest.raises(ValueError, match="more than once"):
        vad.process([a, a], np.zeros((2, WINDOW), np.float32))
    assert a.windows == 0, "a refused call leaves the stream untouched"
    assert vad.process([], np.zeros((0, WINDOW), np.float32)).shape == (0,)
    assert isinstance(vad.new_stream(), VadStream)
