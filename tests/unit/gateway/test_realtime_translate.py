"""The Realtime translation on its own: Jarvis session events in, Realtime server events out
(each one checked strictly against the official SDK's types), with a clock the test drives."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from services.gateway.realtime import events as rt
from services.gateway.realtime.translate import Translator
from shared import protocol as p
from tests.support.realtime import validate


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def tr() -> tuple[Translator, Clock]:
    clock = Clock()
    t = Translator("jarvis", 16000, clock=clock)
    t.on_client(rt.parse_client_event('{"type": "session.update", "session": {"type": "realtime"}}'))
    t.opened("s1")
    t.on_event(p.Ready(session_id="s1", pipeline="sts", trigger=p.Trigger.VAD, sample_rate=16000))
    t.take()
    return t, clock


def out(t: Translator) -> list[dict]:
    """The events emitted so far, each validated by the SDK's types, as dicts."""
    events, _ = t.take()
    dumped = [e.dump() for e in events]
    for raw in dumped:
        validate(raw)
    return [json.loads(raw) for raw in dumped]


def types(evs: list[dict]) -> list[str]:
    return [e["type"] for e in evs]


def append_audio(t: Translator, seconds: float) -> None:
    pcm = bytes(int(24000 * seconds) * 2)
    t.on_client(
        rt.parse_client_event(
            '{"type": "input_audio_buffer.append", "audio": "' + base64.b64encode(pcm).decode() + '"}'
        )
    )


def spoken_turn(t: Translator, n: int, text: str, reply: str, audio_s: float) -> list[dict]:
    for ev in (
        p.VadEvent(speaking=True),
        p.VadEvent(speaking=False),
        p.StateChanged(state=p.State.THINKING, previous=p.State.LISTENING),
        p.TranscriptEvent(turn=n, text=text, final=True),
        p.Reply(turn=n, delta=reply),
        p.AudioStart(turn=n, sample_rate=16000),
    ):
        t.on_event(ev)
    t.on_audio(np.zeros(int(16000 * audio_s), dtype="<i2").tobytes())
    for ev in (
        p.Reply(turn=n, final=True, text=reply),
        p.AudioEnd(turn=n),
        p.Metrics(turn=n, end_of_turn_ms=288, total_ms=900),
    ):
        t.on_event(ev)
    return out(t)


def test_a_spoken_turn_is_the_realtime_sequence(tr):
    t, _ = tr
    evs = spoken_turn(t, 1, "hi", "Hello.", 1.0)
    assert types(evs) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "response.created",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    audio = b"".join(base64.b64decode(e["delta"]) for e in evs if e["type"] == "response.output_audio.delta")
    assert abs(len(audio) // 2 - 24000) <= 20  # one second at 24 kHz
    done = evs[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["transcript"] == "Hello."


def test_a_cough_during_the_reply_makes_no_item(tr):
    t, _ = tr
    spoken_turn(t, 1, "hi", "Hello.", 1.0)
    t.on_event(p.VadEvent(speaking=True))
    t.on_event(p.VadEvent(speaking=False))  # no THINKING follows: not a turn
    cough = out(t)[0]["item_id"]
    evs = spoken_turn(t, 2, "again", "Once more.", 0.5)
    committed = [e for e in evs if e["type"] == "input_audio_buffer.committed"]
    assert len(committed) == 1 and committed[0]["item_id"] != cough
    assert committed[0]["item_id"] == evs[0]["item_id"]


def test_a_barge_in_after_the_response_is_done_truncates_the_item_only(tr):
    t, clock = tr
    evs = spoken_turn(t, 1, "hi", "Hello there, how are you.", 3.0)
    item = evs[-1]["response"]["output"][0]["id"]
    clock.t += 1.25  # the client has played 1.25 s when the user talks over it
    t.on_event(p.Interrupted(turn=1, spoken="Hello there,"))
    (ev,) = out(t)
    assert ev == {**ev, "type": "conversation.item.truncated", "item_id": item, "audio_end_ms": 1250}


def test_a_barge_in_mid_response_cancels_it(tr):
    t, clock = tr
    for ev in (
        p.VadEvent(speaking=True),
        p.VadEvent(speaking=False),
        p.StateChanged(state=p.State.THINKING, previous=p.State.LISTENING),
        p.TranscriptEvent(turn=1, text="hi", final=True),
        p.Reply(turn=1, delta="Hello there."),
        p.AudioStart(turn=1, sample_rate=16000),
    ):
        t.on_event(ev)
    t.on_audio(bytes(16000 * 2))
    out(t)
    clock.t += 0.5
    t.on_event(p.VadEvent(speaking=True))
    t.on_event(p.Interrupted(turn=1, spoken="Hello"))
    t.on_event(p.Metrics(turn=1, end_of_turn_ms=288, total_ms=900, interrupted=True))
    evs = out(t)
    assert types(evs)[0] == "input_audio_buffer.speech_started"
    done = next(e for e in evs if e["type"] == "response.done")["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "turn_detected"
    assert (
        done["output"][0]["status"] == "incomplete"
        and done["output"][0]["content"][0]["transcript"] == "Hello"
    )
    assert evs[-1] == {**evs[-1], "type": "conversation.item.truncated", "audio_end_ms": 500}
    assert types(evs).count("response.done") == 1  # the interrupted turn's metrics close nothing twice


def test_nothing_intelligible_ends_the_response_empty(tr):
    t, _ = tr
    for ev in (
        p.VadEvent(speaking=True),
        p.VadEvent(speaking=False),
        p.StateChanged(state=p.State.THINKING, previous=p.State.LISTENING),
        p.TranscriptEvent(turn=1, text="", final=True),
    ):
        t.on_event(ev)
    evs = out(t)
    assert evs[-1]["type"] == "response.done"
    assert evs[-1]["response"]["status"] == "completed" and evs[-1]["response"]["output"] == []


def test_partial_transcripts_become_deltas_of_the_words_two_guesses_agree_on(tr):
    t, _ = tr
    t.on_event(p.VadEvent(speaking=True))
    out(t)
    for guess in ("what is", "what is the", "what is the capital", "what was the capital of"):
        t.on_event(p.TranscriptEvent(turn=1, text=guess, final=False))
    deltas = [e["delta"] for e in out(t)]
    assert deltas == ["what is", " the"]  # then "is" became "was": nothing that would need unsaying


def test_manual_mode_holds_audio_until_the_response_is_asked_for(tr):
    t, _ = tr
    t.on_client(
        rt.parse_client_event(
            '{"type": "session.update", "session": {"type": "realtime",'
            ' "audio": {"input": {"turn_detection": null}}}}'
        )
    )
    _, commands = t.take()
    assert commands == [p.Config(trigger=p.Trigger.MANUAL, options={"voice": None})]
    append_audio(t, 1.0)
    assert t.take()[1] == []  # held
    t.on_client(rt.parse_client_event('{"type": "input_audio_buffer.commit"}'))
    assert types(out(t)) == ["input_audio_buffer.committed", "conversation.item.added"]
    t.on_client(rt.parse_client_event('{"type": "response.create"}'))
    events, commands = t.take()
    assert commands[0] == p.Turn(action="begin") and commands[-1] == p.Turn(action="end")
    assert sum(len(c) for c in commands if isinstance(c, bytes)) // 2 == pytest.approx(16000, abs=20)
    assert [e.type for e in events] == ["response.created"]


def test_a_refused_event_leaves_nothing_half_done(tr):
    t, _ = tr
    with pytest.raises(rt.RealtimeError) as exc:
        t.on_client(
            rt.parse_client_event(
                '{"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],'
                ' "audio": {"input": {"format": {"type": "audio/pcmu"}}}}}'
            )
        )
    assert exc.value.code == "unsupported_feature" and exc.value.param == "session.audio.input.format"
    assert t.take() == ([], []) and t.settings.modalities == ["audio"]


def test_a_late_cut_of_an_old_reply_leaves_the_new_response_alone(tr):
    t, clock = tr
    evs = spoken_turn(t, 1, "hi", "Hello there.", 2.0)
    old = evs[-1]["response"]["output"][0]["id"]
    clock.t += 5  # played out
    t.on_client(rt.parse_client_event('{"type": "response.create"}'))  # a reply without new words
    assert t.take()[1] == [p.Respond(speak=True)]
    t.on_event(p.StateChanged(state=p.State.THINKING, previous=p.State.LISTENING))
    t.on_client(
        rt.parse_client_event(
            '{"type": "conversation.item.truncate", "item_id": "'
            + old
            + '", "content_index": 0, "audio_end_ms": 900}'
        )
    )
    assert t.take()[1] == [p.Truncate(turn=1, audio_end_ms=900)]
    t.on_event(p.Interrupted(turn=1, spoken="Hello"))
    (ev,) = out(t)
    assert ev["type"] == "conversation.item.truncated" and ev["item_id"] == old and ev["audio_end_ms"] == 900
    t.on_event(p.Reply(turn=2, delta="More."))
    t.on_event(p.Metrics(turn=2, end_of_turn_ms=0, total_ms=100))
    done = out(t)[-1]
    assert done["type"] == "response.done" and done["response"]["status"] == "completed"


def test_talking_on_before_the_reply_is_heard_continues_the_same_item(tr):
    t, _ = tr
    for ev in (
        p.VadEvent(speaking=True),
        p.VadEvent(speaking=False),
        p.StateChanged(state=p.State.THINKING, previous=p.State.LISTENING),
        p.TranscriptEvent(turn=1, text="what is", final=True),
        p.Reply(turn=1, delta="It is"),
    ):
        t.on_event(ev)
    first = out(t)
    user = first[0]["item_id"]
    assistant = next(e for e in first if e["type"] == "response.output_item.added")["item"]["id"]
    t.on_event(p.VadEvent(speaking=True))  # the user goes on: the same turn continues
    t.on_event(p.Interrupted(turn=1, continued=True))
    t.on_event(p.StateChanged(state=p.State.LISTENING, previous=p.State.THINKING))
    t.on_event(p.VadEvent(speaking=False))
    t.on_event(p.StateChanged(state=p.State.THINKING, previous=p.State.LISTENING))
    t.on_event(p.TranscriptEvent(turn=1, text="what is the time", final=True))
    evs = out(t)
    done = next(e for e in evs if e["type"] == "response.done")["response"]
    assert done["status"] == "cancelled"
    assert {e["item_id"] for e in evs if e["type"] == "conversation.item.deleted"} == {user, assistant}
    second = next(e for e in evs if e["type"] == "input_audio_buffer.committed")
    assert second["item_id"] != user and "previous_item_id" not in second  # the deleted ones are gone
    completed = next(e for e in evs if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert completed["item_id"] == second["item_id"] and completed["transcript"] == "what is the time"
    assert types(evs).count("response.created") == 1


def test_words_found_over_a_reply_begin_the_next_turn_when_it_starts(tr):
    t, _ = tr
    spoken_turn(t, 1, "hi", "Hello there, how are you.", 3.0)
    t.on_event(p.VadEvent(speaking=True))
    t.on_event(p.Playback(turn=1, action="pause"))
    t.on_event(p.VadEvent(speaking=False))  # short: STT is asked whether it held words
    words = out(t)[0]["item_id"]
    t.on_event(p.Interrupted(turn=1, spoken="Hello there,"))  # it did
    t.on_event(p.StateChanged(state=p.State.LISTENING, previous=p.State.SPEAKING))
    t.on_event(p.StateChanged(state=p.State.THINKING, previous=p.State.LISTENING))
    evs = out(t)
    assert types(evs)[:3] == [
        "conversation.item.truncated",
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]
    assert evs[1]["item_id"] == words and types(evs)[-1] == "response.created"
