import json

import pytest

from shared import protocol as p


def test_every_client_message_parses():
    samples = [
        {"type": "start", "pipeline": "sts", "session_id": "abc", "sample_rate": 16000},
        {"type": "stop"},
        {"type": "config", "pipeline": "chat", "options": {"voice": "x"}},
        {"type": "text", "text": "hello"},
        {"type": "vad", "speaking": True},
        {"type": "interrupt"},
        {"type": "turn", "action": "begin"},
    ]
    for s in samples:
        assert p.parse_client_text(json.dumps(s)).type == s["type"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", p.ErrorCode.BAD_JSON),
        ("[1, 2]", p.ErrorCode.INVALID),
        ('{"type": "dance"}', p.ErrorCode.UNKNOWN_TYPE),
        ('{"no": "type"}', p.ErrorCode.UNKNOWN_TYPE),
        ('{"type": "text"}', p.ErrorCode.INVALID),
        ('{"type": "text", "text": ""}', p.ErrorCode.INVALID),
        ('{"type": "turn", "action": "sideways"}', p.ErrorCode.INVALID),
        ('{"type": "stop", "surprise": 1}', p.ErrorCode.INVALID),
    ],
)
def test_bad_messages_get_a_clear_code(raw, code):
    with pytest.raises(p.ProtocolError) as exc:
        p.parse_client_text(raw)
    assert exc.value.code == code
    assert exc.value.message


def test_server_events_round_trip_through_json():
    events = [
        p.Ready(session_id="s1", pipeline="sts", trigger=p.Trigger.VAD, sample_rate=16000),
        p.StateChanged(state=p.State.THINKING, previous=p.State.LISTENING),
        p.TranscriptEvent(turn=1, text="hi", final=True),
        p.Reply(turn=1, delta="Hel"),
        p.AudioStart(turn=1, sample_rate=22050),
        p.Interrupted(turn=1, spoken="Hello"),
        p.Loading(models=[p.ModelLoad(model="whisper", state="loading", progress=0.5)], eta_s=2.0),
        p.Metrics(turn=1, end_of_turn_ms=300, total_ms=900, first_audio_ms=500),
        p.Error(code=p.ErrorCode.BAD_FRAME, message="nope"),
    ]
    for ev in events:
        back = p.server_event.validate_json(p.dump(ev))
        assert back == ev
