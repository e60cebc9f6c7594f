"""The speech the load generator plays, each client's exact sample stream, and the offline
replay of the orchestrator's VAD + endpointing over it.

The question is spoken once by espeak-ng (resampled by sox, as the tests do), trimmed to
where its speech samples end and padded to whole 20 ms frames; it is cached under
bench-results/cache so later runs (and every client) reuse the same samples.

A client's stream is fully described by a `Plan` (lead-in silence, then per turn the
question, the gap of silence and any extra silence a "wait for the reply" client added),
so after a run the exact samples the orchestrator saw can be rebuilt and replayed through
the same Silero model and `EndpointDetector` to find, for every turn, the VAD window (hence
the client frame) that completed the end-of-turn decision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.stats import FRAME, RATE, WINDOW, window_complete_frame

DEFAULT_QUESTION = "What color is the sky on a clear day?"
SPEECH_LEVEL = 100  # |sample| at or above this (about -50 dBFS) counts as speech when trimming


@dataclass(frozen=True)
class Clip:
    text: str
    samples: np.ndarray  # int16, a whole number of frames, starting with speech
    speech_end: int  # one past the last speech sample

    @property
    def frames(self) -> int:
        return len(self.samples) // FRAME

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE

    def frame_bytes(self, tag: int) -> list[bytes]:
        """Every frame as a ready-to-send binary WebSocket message (kind tag + PCM16LE)."""
        pcm = self.samples.astype("<i2").tobytes()
        step = FRAME * 2
        return [bytes((tag,)) + pcm[i : i + step] for i in range(0, len(pcm), step)]


def trim_clip(samples: np.ndarray, level: int = SPEECH_LEVEL) -> tuple[np.ndarray, int]:
    """Cut leading/trailing near-silence, pad to whole frames; (clip, speech_end)."""
    loud = np.nonzero(np.abs(samples.astype(np.int32)) >= level)[0]
    if not len(loud):
        raise ValueError("the clip holds no speech")
    a, b = int(loud[0]), int(loud[-1]) + 1
    speech = samples[a:b].astype(np.int16)
    pad = (-len(speech)) % FRAME
    return np.concatenate([speech, np.zeros(pad, np.int16)]), len(speech)


def load_clip(text: str = DEFAULT_QUESTION, cache_dir: Path | None = None) -> Clip:
    """The spoken question, made once with espeak-ng and cached as raw PCM + JSON."""
    key = hashlib.sha1(f"{text}|espeak-ng|en-us|160|{SPEECH_LEVEL}".encode()).hexdigest()[:12]
    if cache_dir is not None:
        pcm_path = cache_dir / f"question-{key}.pcm"
        meta_path = cache_dir / f"question-{key}.json"
        if pcm_path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            samples = np.frombuffer(pcm_path.read_bytes(), dtype="<i2").astype(np.int16)
            return Clip(meta["text"], samples, int(meta["speech_end"]))
    from tests.support.speech import have_espeak, speak  # espeak-ng + sox, the same speech the tests use

    if not have_espeak():
        raise RuntimeError(
            "the benchmark speaks its question with espeak-ng and sox: install them (make sysdeps)"
        )
    clip, end = trim_clip(speak(text))
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        pcm_path.write_bytes(clip.astype("<i2").tobytes())
        meta_path.write_text(json.dumps({"text": text, "speech_end": end, "samples": len(clip)}))
    return Clip(text, clip, end)


@dataclass
class Plan:
    """One client's stream in frames: lead-in silence, then per turn the question, `gap`
    frames of silence and `extra[k]` more (filled in while running when the client waits
    for the reply), then `tail` frames of silence at the end."""

    lead_in: int
    turns: int
    clip_frames: int
    gap: int
    extra: list[int] = field(default_factory=list)
    tail: int = 0

    def __post_init__(self) -> None:
        if not self.extra:
            self.extra = [0] * self.turns

    def clip_start(self, k: int) -> int:
        """Frame at which question k (0-based) starts."""
        return self.lead_in + k * (self.clip_frames + self.gap) + sum(self.extra[:k])

    @property
    def total_frames(self) -> int:
        return self.clip_start(self.turns) + self.tail

    def key(self) -> tuple:
        return (self.lead_in, self.turns, self.clip_frames, self.gap, tuple(self.extra), self.tail)

    def samples(self, clip: Clip) -> np.ndarray:
        out = np.zeros(self.total_frames * FRAME, dtype=np.int16)
        for k in range(self.turns):
            s = self.clip_start(k) * FRAME
            out[s : s + len(clip.samples)] = clip.samples
        return out


@dataclass(frozen=True)
class Decision:
    """An endpointing event the orchestrator will take on this stream."""

    kind: str  # "start" (SpeechStart) or "end" (TurnEnd)
    window: int  # VAD window whose probability caused it
    frame: int  # the client frame that completed that window
    end_ms: float | None = None  # TurnEnd: end of the last speech window, stream time


def offline_decisions(plans: list[Plan], clip: Clip, endpoint, vad=None) -> dict[tuple, list[Decision]]:
    """Replay every distinct plan through Silero (batched, as the orchestrator runs it) and a
    fresh `EndpointDetector(endpoint)`; returns plan.key() -> decisions in stream order."""
    from services.orchestrator.endpoint import EndpointDetector, SpeechStart, TurnEnd

    if vad is None:
        from shared.vad import SileroVad

        vad = SileroVad()
    distinct: dict[tuple, Plan] = {}
    for p in plans:
        distinct.setdefault(p.key(), p)
    keys = list(distinct)
    # the orchestrator scales int16 -> float32 this way before cutting windows
    signals = [distinct[k].samples(clip).astype(np.float32) * (1 / 32768) for k in keys]
    streams = [vad.new_stream() for _ in keys]
    detectors = [EndpointDetector(endpoint) for _ in keys]
    out: dict[tuple, list[Decision]] = {k: [] for k in keys}
    n_windows = [len(s) // WINDOW for s in signals]
    for w in range(max(n_windows, default=0)):
        live = [i for i, n in enumerate(n_windows) if w < n]
        batch = np.stack([signals[i][w * WINDOW : (w + 1) * WINDOW] for i in live])
        probs = vad.process([streams[i] for i in live], batch)
        for i, prob in zip(live, probs, strict=True):
            for ev in detectors[i].feed(float(prob)):
                if isinstance(ev, SpeechStart):
                    out[keys[i]].append(Decision("start", w, window_complete_frame(w)))
                elif isinstance(ev, TurnEnd):
                    out[keys[i]].append(Decision("end", w, window_complete_frame(w), ev.end_ms))
    return out
