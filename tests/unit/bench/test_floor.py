"""`python -m bench.floor`: the costs it measures are real frames sent and received and real
Silero windows, and the floor is their sum per session."""

from __future__ import annotations

from bench.floor import FRAME_S, HEADROOM, WINDOWS_PER_S, measure, render


def test_the_floor_counts_frames_both_ways_and_adds_them_up() -> None:
    report = measure([3], seconds=1.0)
    (step,) = report["steps"]
    for side in ("receive", "send"):  # 3 clients, 50 frames a second each, at most
        assert 30 <= step[side]["frames_per_s"] <= 160  # never more than real time; a busy host sends less
        assert step[side]["us_per_frame"] > 0
    assert step["silero"]["us_per_window"] > 0
    per_session = (
        (step["receive"]["us_per_frame"] + step["send"]["us_per_frame"]) / FRAME_S
        + step["silero"]["us_per_window"] * WINDOWS_PER_S
    ) / 1e6
    assert abs(step["floor_cores_per_session"] - per_session) < 1e-4
    assert report["sessions_at_floor"] == int(HEADROOM * report["cpus"] / step["floor_cores_per_session"])
    assert "floor alone fills" in render(report)
