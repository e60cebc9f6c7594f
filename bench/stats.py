"""The arithmetic behind every figure: percentiles, summaries, CPU/memory shares and the
sample/frame/window bookkeeping that turns offline VAD decisions into send times.

Pure Python (no numpy) so it is cheap to unit-test (tests/unit/bench/)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

FRAME = 320  # samples per client frame: 20 ms at 16 kHz
WINDOW = 512  # samples per Silero VAD window: 32 ms at 16 kHz
RATE = 16000


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default "linear" method). None for no values."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError("q must be within [0, 100]")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Iterable[float], digits: int = 2) -> dict[str, float | int | None]:
    """n, p50, p95, p99, mean, min and max of `values` (None fields when there are none)."""
    xs = [float(v) for v in values]

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, digits)

    if not xs:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "min": None, "max": None}
    return {
        "n": len(xs),
        "p50": r(percentile(xs, 50)),
        "p95": r(percentile(xs, 95)),
        "p99": r(percentile(xs, 99)),
        "mean": r(sum(xs) / len(xs)),
        "min": r(min(xs)),
        "max": r(max(xs)),
    }


def count_over(values: Iterable[float], threshold: float) -> int:
    """How many values are strictly above `threshold`."""
    return sum(1 for v in values if v > threshold)


# ---- frames, windows, samples ---------------------------------------------------------


def frame_of_sample(sample: int, frame: int = FRAME) -> int:
    """Index of the client frame that carries stream sample `sample` (0-based)."""
    if sample < 0:
        raise ValueError("sample must be >= 0")
    return sample // frame


def window_complete_frame(window: int, window_size: int = WINDOW, frame: int = FRAME) -> int:
    """The client frame whose arrival completes VAD window `window` (0-based).

    Window w covers stream samples [w*512, (w+1)*512): the orchestrator can only score it
    once its last sample, (w+1)*512 - 1, has arrived, i.e. with frame ((w+1)*512 - 1) // 320.
    That frame is the one that "completed" any decision the detector took on window w.
    """
    if window < 0:
        raise ValueError("window must be >= 0")
    return frame_of_sample((window + 1) * window_size - 1, frame)


def last_speech_frame(clip_start_frame: int, speech_end_sample: int, frame: int = FRAME) -> int:
    """The frame holding the last speech sample of a clip that starts at a frame boundary.

    `speech_end_sample` is exclusive (one past the last speech sample), counted from the
    clip's start."""
    if speech_end_sample <= 0:
        raise ValueError("speech_end_sample must be > 0")
    return clip_start_frame + (speech_end_sample - 1) // frame


# ---- latency figures ------------------------------------------------------------------


def overhead_ms(first_audio_t: float, last_speech_sent_t: float, end_silence_ms: float) -> float:
    """Overhead: first reply audio at the client - last speech frame sent - the configured
    end-of-turn silence. Times in seconds, result in ms. It still holds the VAD's own lag
    (Silero keeps saying "speech" a window or two after the voice stops, and decisions
    fall on the 32 ms window grid)."""
    return (first_audio_t - last_speech_sent_t) * 1000.0 - end_silence_ms


def framework_ms(first_audio_t: float, decision_frame_sent_t: float) -> float:
    """Framework overhead: first reply audio at the client - the frame that completed the
    end-of-turn decision was sent. Seconds in, ms out."""
    return (first_audio_t - decision_frame_sent_t) * 1000.0


# ---- processes --------------------------------------------------------------------------


def cpu_share(cpu_s_before: float, cpu_s_after: float, wall_s: float) -> float:
    """Cores used over a wall-clock span: CPU seconds delta / wall seconds."""
    if wall_s <= 0:
        raise ValueError("wall_s must be > 0")
    return max(0.0, cpu_s_after - cpu_s_before) / wall_s


def per_second(before: float, after: float, wall_s: float) -> float:
    """A counter's rate over a wall-clock span (a counter never runs backwards: a reset
    reads as 0)."""
    if wall_s <= 0:
        raise ValueError("wall_s must be > 0")
    return max(0.0, after - before) / wall_s


def per_session_mib(rss_before: float, rss_after: float, sessions: int) -> float | None:
    """RSS growth per session in MiB (bytes in). None for no sessions."""
    if sessions <= 0:
        return None
    return (rss_after - rss_before) / sessions / (1 << 20)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys against xs (e.g. RSS against sessions); None if undefined."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    n = len(xs)
    if n < 2:
        return None
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def histogram_over(buckets: Sequence[tuple[float, float]], threshold: float) -> float | None:
    """From cumulative Prometheus buckets [(le, count), ...] (le may be inf), how many
    observations were above `threshold`. `threshold` must be one of the bucket bounds;
    None if it is not."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = bounds[-1][1]
    for le, count in bounds:
        if math.isclose(le, threshold):
            return total - count
    return None
