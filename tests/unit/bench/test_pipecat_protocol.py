"""The anchor scenario's Jarvis protocol on Pipecat: the serializer and the events a Pipecat
pipeline's frames become (bench/pipecat_protocol.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("pipecat.serializers.base_serializer", reason="pipecat-ai and its runtime (make install)")

from pipecat.frames.frames import (  # noqa: E402
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection  # noqa: E402
from pipecat.tests.utils import run_test  # noqa: E402

from bench.loadgen import _id_ms  # noqa: E402
from bench.pipecat_protocol import ClientStartFrame, JarvisEvents, JarvisProtocol, JarvisSerializer  # noqa: E402

DOWN, UP = FrameDirection.DOWNSTREAM, FrameDirection.UPSTREAM


def pcm(n: int = 320) -> bytes:
    return (np.arange(n, dtype=np.int16) * 37).astype("<i2").tobytes()


async def test_a_start_gives_ready_with_a_session_id_then_listening():
    ser = JarvisSerializer()
    start = await ser.deserialize(json.dumps({"type": "start", "pipeline": "sts"}))
    assert isinstance(start, ClientStartFrame)
    down, _ = await run_test(
        JarvisEvents(),
        frames_to_send=[start],
        expected_down_frames=[OutputTransportMessageUrgentFrame, OutputTransportMessageUrgentFrame],
    )
    sent = [json.loads(await ser.serialize(f)) for f in down]  # the start itself goes no further
    assert sent[0]["type"] == "ready" and sent[0]["session_id"]
    assert sent[0]["sample_rate"] == 16000
    assert sent[1] == {"type": "state", "state": "LISTENING", "previous": "IDLE"}


async def test_audio_frames_become_pipecat_input_audio():
    ser = JarvisSerializer()
    frame = await ser.deserialize(bytes((0x01,)) + pcm())
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.audio == pcm() and frame.sample_rate == 16000 and frame.num_channels == 1
    odd = await ser.deserialize(bytes((0x01,)) + pcm() + b"\x07")  # half a sample is dropped
    assert isinstance(odd, InputAudioRawFrame) and odd.audio == pcm()
    assert await ser.deserialize(bytes((0x02,)) + pcm()) is None  # an image: not this pipeline's
    assert await ser.deserialize(b"\x01") is None


async def test_bot_audio_becomes_tagged_binary_frames():
    ser = JarvisSerializer()
    tts = TTSAudioRawFrame(audio=pcm(1600), sample_rate=16000, num_channels=1, context_id="c")
    assert await ser.serialize(tts) == bytes((0x01,)) + pcm(1600)
    plain = OutputAudioRawFrame(audio=pcm(), sample_rate=16000, num_channels=1)
    assert await ser.serialize(plain) == bytes((0x01,)) + pcm()


async def test_what_the_load_generator_does_not_send_is_dropped():
    ser = JarvisSerializer()
    assert await ser.deserialize(json.dumps({"type": "stop"})) is None
    assert await ser.deserialize(json.dumps({"type": "text", "text": "hi"})) is None
    assert await ser.deserialize("{not json") is None
    assert await ser.serialize(InterruptionFrame()) is None
    rtvi = OutputTransportMessageUrgentFrame(message={"label": "rtvi-ai", "type": "bot-ready"})
    assert await ser.serialize(rtvi) is None


def test_a_turn_numbers_its_events_and_stamps_vad_with_wall_ms():
    p = JarvisProtocol()
    p.on_frame(ClientStartFrame(), DOWN)
    t0 = time.time() * 1000
    (on,) = p.on_frame(UserStartedSpeakingFrame(), DOWN)
    assert on.message["type"] == "vad" and on.message["speaking"] is True
    assert abs((_id_ms(on.message) or 0) - t0) < 1000
    off, thinking = p.on_frame(UserStoppedSpeakingFrame(), DOWN)
    assert off.message["speaking"] is False and thinking.message["state"] == "THINKING"
    assert _id_ms(off.message) is not None
    (audio_start,) = p.on_frame(TTSStartedFrame(), DOWN)
    assert audio_start.message == {"type": "audio_start", "turn": 1, "sample_rate": 16000}
    assert audio_start.ordered  # in line with the audio: the next binary frame is the reply's first
    assert p.on_frame(TTSStartedFrame(), DOWN) == []  # a second sentence: one audio_start a turn
    (speaking,) = p.on_frame(BotStartedSpeakingFrame(), UP)
    assert speaking.message["state"] == "SPEAKING"
    end, listening = p.on_frame(BotStoppedSpeakingFrame(), UP)
    assert end.message == {"type": "audio_end", "turn": 1} and listening.message["state"] == "LISTENING"
    # the user's copy of a broadcast frame going upstream is not a second event
    assert p.on_frame(UserStoppedSpeakingFrame(), UP) == []


def test_a_barge_in_interrupts_the_reply_once():
    p = JarvisProtocol()
    p.on_frame(ClientStartFrame(), DOWN)
    assert p.on_frame(InterruptionFrame(), DOWN) == []  # nothing to cut yet
    p.on_frame(UserStoppedSpeakingFrame(), DOWN)
    p.on_frame(TTSStartedFrame(), DOWN)
    p.on_frame(BotStartedSpeakingFrame(), UP)
    cut, listening = p.on_frame(InterruptionFrame(), DOWN)
    assert cut.message["type"] == "interrupted" and cut.message["turn"] == 1
    assert listening.message["state"] == "LISTENING"
    assert p.on_frame(BotStoppedSpeakingFrame(), UP) == []  # the cut reply stopping is not news
    p.on_frame(UserStoppedSpeakingFrame(), DOWN)
    (again,) = p.on_frame(TTSStartedFrame(), DOWN)
    assert again.message["turn"] == 2


async def test_events_go_out_as_transport_messages_audio_start_in_line():
    p = JarvisEvents()
    down, _ = await run_test(
        p,
        frames_to_send=[UserStoppedSpeakingFrame(), TTSStartedFrame()],
        expected_down_frames=[
            OutputTransportMessageUrgentFrame,  # vad off
            OutputTransportMessageUrgentFrame,  # THINKING
            UserStoppedSpeakingFrame,
            OutputTransportMessageFrame,  # audio_start, queued with the audio
            TTSStartedFrame,
        ],
    )
    assert down[3].message["type"] == "audio_start"
