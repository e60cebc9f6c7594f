"""bench.hops: a turn's timeline from stream entry stamps. The decision frame lands in the first
audio entry the gateway stamped after it was sent; when that entry was trimmed, the next one (a
later turn's audio) is not taken for it."""

from bench.hops import breakdown


def _raw(audio: list[tuple[int, float]]) -> dict:
    return {
        "audio_ms": audio,
        "turns": {1: {"llm_job": 1_000_012, "tts_job": 1_000_014, "tts_first_audio": 1_000_016}},
    }


def test_the_decision_frame_lands_in_the_first_entry_stamped_after_it_was_sent():
    sent = [999.990, 1000.000]  # s; frame 1 completed the decision
    audio = [(999_995, 999_991.0), (1_000_003, 1_000_001.0), (1_000_040, 1_000_039.0)]
    rows = breakdown(_raw(audio), sent, [(1, 1, 1000.020)])
    assert rows[0]["frame_in_redis"] == 3
    assert rows[0]["llm_job"] == 12 and rows[0]["tts_first_audio"] == 16
    assert round(rows[0]["client_first_audio"]) == 20


def test_a_trimmed_frame_is_not_taken_from_a_later_turns_audio():
    sent = [999.990, 1000.000]
    audio = [(1_003_000, 1_002_999.0)]  # only audio said after the reply began is left
    rows = breakdown(_raw(audio), sent, [(1, 1, 1000.020)])
    assert "frame_in_redis" not in rows[0]
    assert rows[0]["llm_job"] == 12
