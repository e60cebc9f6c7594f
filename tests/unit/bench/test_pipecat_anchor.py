"""Smoke test of the anchor scenario (bench/pipecat_anchor.py): a real Pipecat 1.14 server in
its own process, two sessions of b's load generator talking to it for two turns each. About
15 s on two cores; the figures themselves are the benchmark's business, not this test's."""

from __future__ import annotations

import psutil
import pytest

from bench.pipecat_anchor import missing

if missing():
    pytest.skip(f"the anchor cannot run here: {missing()}", allow_module_level=True)

from tests.support.speech import have_espeak  # noqa: E402

if not have_espeak():
    pytest.skip("espeak-ng and sox speak the benchmark's question", allow_module_level=True)


def test_two_sessions_get_every_turn_answered_and_the_server_is_stopped(tmp_path):
    from bench.audio import DEFAULT_QUESTION, load_clip
    from bench.pipecat_anchor import run_pipecat_load
    from bench.scenarios import Options
    from services.orchestrator.config import EndpointSettings
    from shared.vad import SileroVad

    opts = Options(turns=2, end_silence_ms=288.0, start_timeout=90.0)
    clip = load_clip(DEFAULT_QUESTION, tmp_path / "cache")
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    r = run_pipecat_load(2, 2, clip, opts, EndpointSettings(end_silence_ms=288.0), SileroVad())

    assert "error" not in r, r.get("logs")
    assert r["client_errors"] == [] and r["server_errors"] == []
    assert r["questions"] == 4 and r["expected_turns"] == 4
    assert r["missed_turns"] == 0 and r["false_turns"] == 0
    assert r["framework_ms"]["n"] == 4  # a reply heard for each question
    assert r["pipecat_decisions"] == 8  # Pipecat's VAD, replayed: a start and an end per turn
    assert r["decision_frames"] == 8  # ... each matched by the event the live server sent
    assert r["processes"]["pipecat"]["cpu_cores"] > 0
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not [pid for pid in left if psutil.pid_exists(pid)], "the Pipecat server outlived the step"
