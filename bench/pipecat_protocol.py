"""The subset of Jarvis's client protocol (docs/PROTOCOL.md) that the load generator uses,
spoken by a Pipecat 1.14 pipeline: the anchor scenario's server (`bench.pipecat_server`).

Three pieces, all ours:
- `JarvisSerializer`, a Pipecat `FrameSerializer`: the client's JSON `start` becomes a
  `ClientStartFrame`, its binary 0x01 + PCM16 16 kHz frames become `InputAudioRawFrame`s;
  on the way out, transport messages become JSON text frames and bot audio 0x01 + PCM16
  binary frames. Anything else (`stop`, unknown types, other tags) is dropped: the pipeline
  ends when the connection closes.
- `JarvisProtocol`, a plain state machine: which protocol events a pipeline frame stands for
  (`ready` + LISTENING at start; `vad`, THINKING, `audio_start`, SPEAKING, `audio_end`,
  LISTENING and `interrupted` from Pipecat's user / bot speaking, TTS and interruption frames),
  numbering the turns. Unit-tested without a pipeline (tests/unit/bench/).
- `JarvisEvents`, the Pipecat `FrameProcessor` that runs it just before the output transport,
  pushing each event as a transport message. `audio_start` goes in order with the audio (the
  client stamps the first binary frame after it as the reply's first audio); every other
  event goes at once (urgent).

Event ids: `vad` events carry `id` = "<wall ms>-<n>", as the gateway's Redis stream ids do,
so the load generator's decision-lag figure reads the time Pipecat's turn decision reached
this processor.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    SystemFrame,
    TTSStartedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.base_serializer import FrameSerializer

AUDIO_TAG = 0x01
RATE = 16000


@dataclass
class ClientStartFrame(SystemFrame):
    """The client sent `start`: open the session (answered by `ready` and LISTENING)."""

    pipeline: str = "sts"


class JarvisSerializer(FrameSerializer):
    """Jarvis's wire format for one WebSocket connection (see the module docstring)."""

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, bytes | bytearray):
            if len(data) < 3 or data[0] != AUDIO_TAG:
                return None
            pcm = bytes(data[1 : len(data) - ((len(data) - 1) % 2)])  # whole samples only
            return InputAudioRawFrame(audio=pcm, sample_rate=RATE, num_channels=1)
        try:
            msg = json.loads(data)
        except ValueError:
            return None
        if isinstance(msg, dict) and msg.get("type") == "start":
            return ClientStartFrame(pipeline=str(msg.get("pipeline") or "sts"))
        return None

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            return bytes((AUDIO_TAG,)) + frame.audio
        if isinstance(frame, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
            if self.should_ignore_frame(frame):
                return None
            return json.dumps(frame.message)
        return None


@dataclass
class Event:
    """One protocol event; `ordered`: send it in line with the audio, not at once."""

    message: dict[str, Any]
    ordered: bool = False


@dataclass
class JarvisProtocol:
    """Which protocol events each pipeline frame means, for one session."""

    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    turn: int = 0
    replying: bool = False  # from the end of the user's turn until the reply stops or is cut
    audio_started: bool = False
    state: str = "IDLE"
    _seq: int = 0

    def _state(self, new: str) -> Event:
        ev = Event({"type": "state", "state": new, "previous": self.state})
        self.state = new
        return ev

    def _stamp(self) -> str:
        self._seq += 1
        return f"{int(time.time() * 1000)}-{self._seq}"

    def on_frame(self, frame: Frame, direction: FrameDirection) -> list[Event]:
        if isinstance(frame, ClientStartFrame):
            ready = {
                "type": "ready",
                "session_id": self.session_id,
                "pipeline": frame.pipeline,
                "trigger": "vad",
                "sample_rate": RATE,
            }
            return [Event(ready), self._state("LISTENING")]
        if isinstance(frame, UserStartedSpeakingFrame) and direction == FrameDirection.DOWNSTREAM:
            return [Event({"type": "vad", "speaking": True, "id": self._stamp()})]
        if isinstance(frame, UserStoppedSpeakingFrame) and direction == FrameDirection.DOWNSTREAM:
            self.turn += 1
            self.replying, self.audio_started = True, False
            vad = Event({"type": "vad", "speaking": False, "id": self._stamp()})
            return [vad, self._state("THINKING")]
        if isinstance(frame, InterruptionFrame):
            if not self.replying:
                return []
            self.replying = False
            cut = Event({"type": "interrupted", "turn": self.turn, "spoken": "", "continued": False})
            return [cut, self._state("LISTENING")]
        if isinstance(frame, TTSStartedFrame) and self.replying and not self.audio_started:
            self.audio_started = True
            return [Event({"type": "audio_start", "turn": self.turn, "sample_rate": RATE}, ordered=True)]
        if isinstance(frame, BotStartedSpeakingFrame) and self.replying and self.state != "SPEAKING":
            return [self._state("SPEAKING")]
        if isinstance(frame, BotStoppedSpeakingFrame) and self.replying:
            self.replying = False
            return [Event({"type": "audio_end", "turn": self.turn}), self._state("LISTENING")]
        return []


class JarvisEvents(FrameProcessor):
    """Runs `JarvisProtocol` on every frame passing just before the output transport."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.protocol = JarvisProtocol()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        for ev in self.protocol.on_frame(frame, direction):
            out = OutputTransportMessageFrame if ev.ordered else OutputTransportMessageUrgentFrame
            await self.push_frame(out(message=ev.message))
        if not isinstance(frame, ClientStartFrame):
            await self.push_frame(frame, direction)
