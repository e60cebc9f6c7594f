"""One turn in flight: the user's words, its timestamps and the stage times that become its
metrics, the reply text as it streams, and its spoken side (`ReplyAudio`); and speech that
waits to become a turn (`Waiting`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from services.orchestrator.reply import ReplyAudio
from shared import protocol as p


@dataclass(slots=True)
class Turn:
    n: int
    epoch: int
    speak: bool
    t0: float  # end of the user's speech (or when the text arrived)
    decided_ts: float  # when the end-of-turn decision's frame arrived
    user: str = ""
    pcm: bytes = b""  # the audio the user's words were transcribed from (empty for a typed turn)
    image: bool = False
    transcript_ts: float | None = None
    first_token_ts: float | None = None
    done_ts: float | None = None
    stt_ms: float | None = None
    llm_ms: float | None = None
    reply: str = ""
    llm_done: bool = False
    prepared: bool = False  # its models were made resident
    chained: bool = False  # the STT job starts the LLM job itself (SttJob.then)
    awaiting: int = 0  # the pause transcript (end-of-turn request) that will be its transcript
    relayed: bool = False  # a preemptive reply's: its first sentence's audio comes through the runner
    audio: ReplyAudio = field(default_factory=ReplyAudio)
    progress_ts: float = field(default_factory=time.time)  # last sign of life from a stage
    # the last in:{sid} id of its input: once it is in history, a new owner replays from here
    input_end: bytes | str = "0-0"

    @property
    def finished(self) -> bool:
        return self.llm_done and self.audio.idle

    @property
    def first_audio_ts(self) -> float | None:
        return self.audio.first_audio_ts

    def metrics(self, interrupted: bool = False) -> p.Metrics:
        end = self.done_ts or time.time()

        def rel(ts: float | None) -> float | None:
            return None if ts is None else round((ts - self.t0) * 1000, 1)

        return p.Metrics(
            turn=self.n,
            end_of_turn_ms=round((self.decided_ts - self.t0) * 1000, 1),
            transcript_ms=rel(self.transcript_ts),
            first_token_ms=rel(self.first_token_ts),
            first_audio_ms=rel(self.first_audio_ts),
            total_ms=round((end - self.t0) * 1000, 1),
            stt_ms=None if self.stt_ms is None else round(self.stt_ms, 1),
            llm_ms=None if self.llm_ms is None else round(self.llm_ms, 1),
            tts_ms=round(self.audio.tts_ms, 1) if self.audio.sentences else None,
            interrupted=interrupted,
        )

    @staticmethod
    def record(metrics: p.Metrics) -> dict[str, Any]:
        """The metrics as history keeps them."""
        return metrics.model_dump(exclude={"type", "id"})


@dataclass(slots=True)
class Waiting:
    """Speech waiting its turn while another is answered: a continuous-mode segment, or what
    the user said over a turn too long to continue."""

    pcm: bytes
    t_eos: float  # end of the speech
    decided_ts: float  # when its end was decided
    input_end: bytes | str  # the last in:{sid} id of its audio (`Turn.input_end`)
