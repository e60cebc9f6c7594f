"""The spoken side of one reply: the sentences cut from the LLM's text, sent to TTS one at a
time (so audio stays in order), their audio as the TTS worker reports it, and what the user
has heard of it by a given moment (what history keeps when the user interrupts)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from shared.messages import TtsProgress
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
class ReplyAudio:
    worker_sends_first: bool = False  # the LLM job starts the first sentence's TTS job (LlmJob.speak)
    splitter: SentenceSplitter = field(default_factory=SentenceSplitter)
    queue: deque[Sentence] = field(default_factory=deque)
    sentences: list[Sentence] = field(default_factory=list)
    inflight: Sentence | None = None
    first_audio_ts: float | None = None
    tts_ms: float = 0.0
    paused_at: float | None = None  # the client holds playback since then
    paused_s: float = 0.0  # time spent paused before that

    def pause(self, now: float) -> None:
        if self.paused_at is None:
            self.paused_at = now

    def resume(self, now: float) -> None:
        if self.paused_at is not None:
            self.paused_s += max(0.0, now - self.paused_at)
            self.paused_at = None

    def played(self, now: float) -> float:
        """Seconds of reply audio the client has played by `now`."""
        if not self.first_audio_ts:
            return 0.0
        until = now if self.paused_at is None else min(now, self.paused_at)
        return min(self.seconds(), max(0.0, until - self.first_audio_ts - self.paused_s))

    def feed(self, text: str) -> None:
        """More reply text: queue the sentences it closes."""
        self._add(self.splitter.feed(text))

    def flush(self, cut: bool = False) -> str:
        """The reply text is complete: queue what is left. A reply `cut` at the token budget
        loses its unfinished last sentence (returned), unless nothing else was said."""
        if not cut:
            self._add(self.splitter.flush())
            return ""
        whole, tail = self.splitter.finish(cut=True)
        self._add(whole)
        return tail

    def _add(self, texts: list[str]) -> None:
        for text in texts:
            s = Sentence(len(self.sentences), text)
            self.sentences.append(s)
            self.queue.append(s)

    def next_job(self) -> Sentence | None:
        """The sentence to send to TTS now, if none is in flight (None also when the LLM worker
        already sent it)."""
        if self.inflight is not None or not self.queue:
            return None
        s = self.queue.popleft()
        self.inflight = s
        if s.seq == 0 and self.worker_sends_first:
            return None
        return s

    def progress(self, t: TtsProgress) -> bool:
        """Apply a TTS worker's report; True when it is the reply's first audio."""
        if t.seq >= len(self.sentences):
            return False
        s = self.sentences[t.seq]
        s.samples, s.sample_rate = t.samples, t.sample_rate
        first = False
        if t.first_audio_ts and not s.first_audio_ts:
            s.first_audio_ts = t.first_audio_ts
        if t.first_audio_ts and self.first_audio_ts is None:
            self.first_audio_ts = t.first_audio_ts
            first = True
        if t.done:
            s.done = True
            self.tts_ms += t.elapsed_ms
            if self.inflight is s:
                self.inflight = None
        return first

    def skip_inflight(self) -> None:
        """The sentence in flight will have no (more) audio: a TTS failure."""
        if self.inflight is not None:
            self.inflight.done = True
        self.inflight = None

    def drop(self) -> None:
        """Nothing more will be spoken (the LLM failed)."""
        self.queue.clear()
        self.inflight = None

    @property
    def idle(self) -> bool:
        return not self.queue and self.inflight is None

    def seconds(self) -> float:
        return sum(s.seconds for s in self.sentences)

    def playback_end(self) -> float:
        """When the client will have played all the audio sent so far (a pause delays it)."""
        now = time.time()
        held = self.paused_s + (now - self.paused_at if self.paused_at is not None else 0.0)
        return (self.first_audio_ts or now) + self.seconds() + held

    def heard(self, now: float) -> str:
        """The reply text the user has heard by `now`: audio sent and played so far."""
        if not self.first_audio_ts:
            return ""
        return self.heard_after(self.played(now))

    def heard_after(self, played: float) -> str:
        """The reply text in its first `played` seconds of audio."""
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
