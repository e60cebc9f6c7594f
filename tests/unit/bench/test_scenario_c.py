"""Scenario c's per-turn table and ratios, from a run's figures (no stack)."""

from __future__ import annotations

from bench.scenarios import per_turn, ratios


def run(v2v: list[float]) -> dict:
    events = [
        {
            "turn": k + 1,
            "end_of_turn_ms": 290.0,
            "transcript_ms": 900.0,
            "first_token_ms": 1000.0,
            "first_audio_ms": 1300.0,
        }
        for k in range(len(v2v))
    ]
    by_turn = {str(k + 1): {"voice_to_voice_ms": {"p50": v}} for k, v in enumerate(v2v)}
    p50 = sorted(v2v)[len(v2v) // 2]
    return {"metrics_events": events, "by_turn": by_turn, "voice_to_voice_ms": {"p50": p50}}


def test_each_turn_gets_its_voice_to_voice_time_and_its_stages_as_spans():
    rows = per_turn(run([1500.0, 1200.0]))
    assert rows[1] == {
        "turn": 2,
        "voice_to_voice_ms": 1200.0,
        "end_of_turn_ms": 290.0,
        "stt_ms": 610.0,
        "llm_first_token_ms": 100.0,
        "tts_first_audio_ms": 300.0,
    }


def test_ratios_against_the_stages_alone_and_turn_2():
    r = run([1500.0] + [1000.0] * 18 + [1100.0])
    r["per_turn"] = per_turn(r)
    r["alone"] = {"sum_ms": 2000.0}
    got = ratios(r)
    assert got["v2v_p50_over_stages_alone"] == 0.5
    assert got["turn20_over_turn2"] == 1.1
    assert got["turns16_20_over_turns2_6"] == 1.0
