"""One turn in flight: its timestamps, the reply as it streams, and the sentences sent to TTS.

It knows what the user has heard so far (`spoken_text`), which is what history keeps
when the user interrupts.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from shared.sentences import SentenceSplitter


@dataclass(slots=True)
class Sentence:
    seq: int
    text: str
    samples: int = 0
    sample_rate: int = 0
    first_audio_ts: float = 0.0
    done: bool = False

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0


@dataclass(slots=True)
class Turn:
    n: int
    epoch: int
    speak: bool
    t0: float  # end of the user's speech (or when the text arrived)
    decided_ts: float  # when the end-of-turn decision's frame arrived
    user: str = ""
    image: bool = False
    transcript_ts: float | None = None
    first_token_ts: float | None = None
    first_audio_ts: float | None = None
    done_ts: float | None = None
    stt_ms: float | None = None
    llm_ms: float | None = None
    tts_ms: float = 0.0
    reply: str = ""
    llm_done: bool = False
    prepared: bool = False  # its models were made resident
    chained: bool = False  # the STT job starts the LLM job itself (SttJob.then)
    llm_speaks: bool = False  # the LLM job starts the first sentence's TTS job itself (LlmJob.speak)
    splitter: SentenceSplitter = field(default_factory=SentenceSplitter)
    queue: deque[Sentence] = field(default_factory=deque)
    sentences: list[Sentence] = field(default_factory=list)
    inflight: Sentence | None = None
    progress_ts: float = field(default_factory=time.time)  # last sign of life from a stage

    def add_sentences(self, texts: list[str]) -> None:
        for text in texts:
            s = Sentence(len(self.sentences), text)
            self.sentences.append(s)
            self.queue.append(s)

    @property
    def finished(self) -> bool:
        return self.llm_done and not self.queue and self.inflight is None

    def audio_seconds(self) -> float:
        return sum(s.seconds for s in self.sentences)

    def playback_end(self) -> float:
        """When the client will have played all the audio sent so far."""
        return (self.first_audio_ts or time.time()) + self.audio_seconds()

    def spoken_text(self, now: float) -> str:
        """The reply text the user has heard by `now`: audio sent and played so far."""
        if not self.first_audio_ts:
            return ""
        played = max(0.0, now - self.first_audio_ts)
        heard: list[str] = []
        for s in self.sentences:
            if not s.samples:
                break
            if played >= s.seconds and s.done:
                heard.append(s.text)
                played -= s.seconds
                continue
            words = s.text.split()
            frac = min(1.0, played / s.seconds) if s.seconds else 0.0
            k = int(len(words) * frac)
            if k:
                heard.append(" ".join(words[:k]))
            break
        return " ".join(heard).strip()

    def metrics(self, interrupted: bool = False) -> dict[str, float | bool | int | None]:
        end = self.done_ts or time.time()

        def rel(ts: float | None) -> float | None:
            return None if ts is None else round((ts - self.t0) * 1000, 1)

        return {
            "turn": self.n,
            "end_of_turn_ms": round((self.decided_ts - self.t0) * 1000, 1),
            "transcript_ms": rel(self.transcript_ts),
            "first_token_ms": rel(self.first_token_ts),
            "first_audio_ms": rel(self.first_audio_ts),
            "total_ms": round((end - self.t0) * 1000, 1),
            "stt_ms": None if self.stt_ms is None else round(self.stt_ms, 1),
            "llm_ms": None if self.llm_ms is None else round(self.llm_ms, 1),
            "tts_ms": round(self.tts_ms, 1) if self.sentences else None,
            "interrupted": interrupted,
        }
