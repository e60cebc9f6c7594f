"""Pipelines: what a session does with its input (`PipelineConfig`), and the per-session
working state of one pipeline run (`PipelineContext`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.protocol import PIPELINE_NAMES, PIPELINE_TRIGGERS, Trigger


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    name: str
    trigger: Trigger  # the default; a client may pick another
    models: tuple[str, ...]  # roles the turn needs resident: stt, llm, vlm, tts
    speak: bool = True  # replies are spoken (TTS) unless a message says otherwise
    vision: bool = False  # the latest image goes to the model with the user's turn


PIPELINES: dict[str, PipelineConfig] = {
    "sts": PipelineConfig("sts", Trigger.VAD, ("stt", "llm", "tts")),
    "chat": PipelineConfig("chat", Trigger.MANUAL, ("llm",), speak=False),
    "vision": PipelineConfig("vision", Trigger.VAD, ("stt", "vlm", "tts"), vision=True),
}
assert set(PIPELINES) == PIPELINE_NAMES, "shared.protocol.PIPELINE_NAMES names every pipeline"
assert {n: c.trigger for n, c in PIPELINES.items()} == PIPELINE_TRIGGERS, "shared.protocol.PIPELINE_TRIGGERS"


_NO_WINDOWS = np.empty((0, 0), dtype="<i2")


@dataclass(slots=True)
class PipelineContext:
    """Per-session input state: the audio kept for the turn being spoken, and the latest frame."""

    sample_rate: int = 16000
    audio: bytearray = field(default_factory=bytearray)  # PCM16 since `audio_start` (in samples)
    audio_start: int = 0
    samples_in: int = 0  # stream time, in samples received
    pending: bytearray = field(default_factory=bytearray)  # PCM16 awaiting a full VAD window
    last_frame_ts: float = 0.0  # wall clock of the latest audio frame (gateway stamp)
    image: bytes | None = None
    image_mime: str = "image/jpeg"
    recording: bool = False  # push-to-talk held, or the client's own VAD says speech

    def append(self, pcm: bytes, ts: float) -> None:
        self.audio += pcm
        self.samples_in += len(pcm) // 2
        self.last_frame_ts = ts

    def vad_windows(self, pcm: bytes, window: int) -> np.ndarray:
        """Add `pcm` to the samples awaiting a VAD window; returns the whole windows now ready,
        as PCM16 rows `[n, window]` (n may be 0)."""
        pending = self.pending
        pending += pcm
        n = len(pending) // (2 * window)
        if not n:
            return _NO_WINDOWS
        out = np.frombuffer(bytes(pending[: n * 2 * window]), dtype="<i2").reshape(n, window)
        del pending[: n * 2 * window]
        return out

    def keep_from(self, sample: int) -> None:
        """Drop buffered audio before stream sample `sample`."""
        cut = max(0, sample - self.audio_start)
        if cut:
            del self.audio[: cut * 2]
            self.audio_start += cut

    def slice(self, start: int, end: int) -> bytes:
        a = max(0, start - self.audio_start) * 2
        b = max(0, end - self.audio_start) * 2
        return bytes(self.audio[a:b])

    def ms_to_sample(self, ms: float) -> int:
        return int(ms * self.sample_rate / 1000)

    def ts_of_sample(self, sample: int) -> float:
        """Wall-clock estimate of when stream sample `sample` reached the gateway."""
        return self.last_frame_ts - (self.samples_in - sample) / self.sample_rate
