"""The soak's arithmetic: which samples a slope is taken over, and the per-minute series."""

from __future__ import annotations

from bench.soak import _after, _per_minute, _slope


def test_a_plateau_after_the_fill_window_has_no_slope_there() -> None:
    # Redis fills for six minutes (events kept for resumes), then holds
    pts = [(t * 10.0, min(t * 10.0, 360.0) / 3) for t in range(180)]
    assert (_slope(pts) or 0) > 1  # over the whole run the fill looks like growth
    flat = _slope(_after(pts, 360.0))
    assert flat is not None and abs(flat) < 1e-9


def test_a_leak_keeps_its_slope_in_the_second_half() -> None:
    pts = [(t * 10.0, 100 + t * 10.0 / 60) for t in range(180)]  # +1 MiB/min
    s = _slope(_after(pts, 900.0))
    assert s is not None and abs(s - 1.0) < 1e-6


def test_a_short_run_keeps_all_its_points() -> None:
    pts = [(0.0, 1.0), (10.0, 2.0), (20.0, 3.0)]
    assert _after(pts, 3600.0) == pts


def test_one_point_per_minute() -> None:
    pts = [(t * 10.0, float(t)) for t in range(19)]  # 3 minutes of 10 s samples
    assert _per_minute(pts) == [[0.0, 0.0], [1.0, 6.0], [2.0, 12.0], [3.0, 18.0]]
