"""The arithmetic behind the benchmark figures (bench/stats.py)."""

from __future__ import annotations

import math
import random

import pytest

from bench import stats


def test_percentile_matches_linear_interpolation():
    xs = [15, 20, 35, 40, 50]
    assert stats.percentile(xs, 0) == 15
    assert stats.percentile(xs, 100) == 50
    assert stats.percentile(xs, 50) == 35
    assert stats.percentile(xs, 40) == pytest.approx(29.0)  # pos 1.6: 20 + 0.6 * 15
    assert stats.percentile(xs, 99) == pytest.approx(49.6)  # pos 3.96: 40 + 0.96 * 10


def test_percentile_is_order_independent_and_agrees_with_numpy():
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    xs = [rng.expovariate(0.1) for _ in range(257)]
    shuffled = xs[:]
    rng.shuffle(shuffled)
    for q in (0, 1, 50, 95, 99, 99.9, 100):
        assert stats.percentile(shuffled, q) == pytest.approx(float(np.percentile(xs, q)))


def test_percentile_edges():
    assert stats.percentile([], 50) is None
    assert stats.percentile([7], 99) == 7
    with pytest.raises(ValueError):
        stats.percentile([1, 2], 101)


def test_summarize():
    s = stats.summarize(range(1, 101))
    assert s["n"] == 100
    assert s["p50"] == pytest.approx(50.5)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)
    assert (s["min"], s["max"], s["mean"]) == (1, 100, 50.5)
    empty = stats.summarize([])
    assert empty["n"] == 0 and empty["p50"] is None


def test_count_over_is_strict():
    assert stats.count_over([99.9, 100, 100.1, 250], 100) == 2


def test_frame_and_window_mapping():
    # 20 ms frames of 320 samples, 32 ms windows of 512 samples
    assert stats.frame_of_sample(0) == 0
    assert stats.frame_of_sample(319) == 0
    assert stats.frame_of_sample(320) == 1
    # window 0 = samples 0..511: its last sample arrives in frame 1 (320..639)
    assert stats.window_complete_frame(0) == 1
    # window 4 ends at sample 2559 = the last sample of frame 7: windows and frames line up every 8 frames
    assert stats.window_complete_frame(4) == 7
    assert stats.window_complete_frame(5) == 9  # samples 2560..3071 end inside frame 9 (2880..3199)
    for w in range(200):
        f = stats.window_complete_frame(w)
        assert f * 320 <= (w + 1) * 512 - 1 < (f + 1) * 320


def test_last_speech_frame():
    # a clip starting at frame 10 whose speech ends after sample 640 (exclusive) ends in frame 11
    assert stats.last_speech_frame(10, 640) == 11
    assert stats.last_speech_frame(10, 641) == 12
    assert stats.last_speech_frame(0, 1) == 0
    with pytest.raises(ValueError):
        stats.last_speech_frame(0, 0)


def test_latency_figures():
    # the reply's first byte 0.35 s after the last speech frame, 300 ms end silence: 50 ms overhead
    assert stats.overhead_ms(10.35, 10.0, 300) == pytest.approx(50.0)
    assert stats.framework_ms(10.35, 10.342) == pytest.approx(8.0)


def test_cpu_and_memory():
    assert stats.cpu_share(10.0, 13.0, 2.0) == pytest.approx(1.5)
    assert stats.cpu_share(10.0, 9.0, 2.0) == 0.0  # a restarted process never gives negative CPU
    with pytest.raises(ValueError):
        stats.cpu_share(0, 1, 0)
    assert stats.per_session_mib(100 << 20, 150 << 20, 25) == pytest.approx(2.0)
    assert stats.per_session_mib(0, 1, 0) is None


def test_slope():
    xs = [10, 25, 50, 100]
    ys = [60 + 0.8 * x for x in xs]
    assert stats.slope(xs, ys) == pytest.approx(0.8)
    assert stats.slope([1], [2]) is None
    assert stats.slope([3, 3], [1, 2]) is None


def test_histogram_over():
    buckets = [(0.01, 5), (0.05, 8), (0.1, 9), (0.25, 10), (math.inf, 12)]
    assert stats.histogram_over(buckets, 0.1) == 3
    assert stats.histogram_over(buckets, 0.01) == 7
    assert stats.histogram_over(buckets, 0.2) is None  # not a bucket bound
    assert stats.histogram_over([], 0.1) is None
