"""Smart Turn v3.2: the probability that a speaker has finished their turn, from the audio alone.

This module owns the end-of-turn *model*: locating its ONNX file, turning audio into the
features it expects, and scoring many sessions' pauses in one onnxruntime call, off the event
loop. When to ask and what to do with the answer is ``services.orchestrator.end_of_turn``.

The model (BSD-2-Clause, pipecat-ai/smart-turn) is a Whisper-encoder classifier that ships
inside the ``pipecat-ai`` wheel as ``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx``
(8.7 MB, int8). The wheel is installed with ``--no-deps`` and never imported: the file is found
through the package's location, as ``vad.py`` finds Silero.

Input contract (checked against the graph at load): ``input_features`` float32
``[batch, 80, 800]``, output ``logits`` ``[batch, 1]``, already a sigmoid probability. One row
is built from the *last 8 s* of 16 kHz mono audio, zero-padded at the start when shorter, as
Whisper's feature extractor with ``chunk_length=8`` and ``do_normalize=True`` would:

1. the 128 000 samples are normalised to zero mean and unit variance (the padding included);
2. faster-whisper's numpy ``FeatureExtractor`` (80 mel bins, 400-point FFT, hop 160, centred
   reflect padding) computes the log-mel spectrogram with no extra end padding, which gives
   exactly 801 frames less the last one = 800, clamped to (max - 8) and scaled
   ``(x + 4) / 4`` per row.

Step 1 is the only difference from what Whisper ASR feeds its encoder; without it the model
sees speech at the wrong level and its answers drift. The unit tests check the features
against the reference implementation that ships beside the model.

faster-whisper's ``feature_extractor.py`` is loaded from the installed package by its path:
it needs only numpy, while importing ``faster_whisper`` itself would pull CTranslate2 and PyAV
into the orchestrator (~50 MB of memory it never uses).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from shared.vad import cpu_session

__all__ = [
    "N_FRAMES",
    "N_MELS",
    "N_SAMPLES",
    "SAMPLE_RATE",
    "SmartTurn",
    "SmartTurnBatcher",
    "SmartTurnMissing",
    "default_model_path",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SECONDS = 8
N_SAMPLES = SECONDS * SAMPLE_RATE  # 128 000
N_MELS = 80
N_FRAMES = 800
_NORM_EPS = 1e-7  # variance floor of the waveform normalisation (as Whisper's do_normalize)
_INT16_SCALE = np.float32(1.0 / 32768.0)
_MODEL_IN_PACKAGE = ("audio", "turn", "smart_turn", "data", "smart-turn-v3.2-cpu.onnx")
_INSTALL_HINT = "install it with: pip install --no-deps pipecat-ai==1.14.0 (`make install` does)"


class SmartTurnMissing(FileNotFoundError):
    """The Smart Turn model (or the feature extractor it needs) is not installed."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_path() -> Path:
    """The Smart Turn v3.2 ONNX file inside the installed ``pipecat-ai`` wheel (not imported)."""
    root = _package_dir("pipecat")
    if root is None:
        raise SmartTurnMissing(
            f"the Smart Turn model ships in the pipecat-ai wheel, which is not installed; {_INSTALL_HINT}"
        )
    path = root.joinpath(*_MODEL_IN_PACKAGE)
    if not path.is_file():
        raise SmartTurnMissing(f"Smart Turn model not found at {path}; {_INSTALL_HINT}")
    return path


def _load_feature_module() -> ModuleType:
    root = _package_dir("faster_whisper")
    path = root / "feature_extractor.py" if root is not None else None
    if path is None or not path.is_file():
        raise SmartTurnMissing(
            "Smart Turn needs faster-whisper's feature extractor; pip install faster-whisper==1.2.1"
        )
    spec = importlib.util.spec_from_file_location("_jarvis_whisper_features", path)
    if spec is None or spec.loader is None:
        raise SmartTurnMissing(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SmartTurn:
    """The Smart Turn v3.2 model on onnxruntime (CPU).

    ``predict([audio, ...])`` returns one probability per clip (one ``session.run`` for all);
    it blocks (~70-90 ms per clip on one core here), so services call it through
    :class:`SmartTurnBatcher` or an executor, never on the event loop.
    """

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            raise SmartTurnMissing(f"Smart Turn model not found at {self.path}")
        self.threads = threads
        self._extractor: Any = _load_feature_module().FeatureExtractor(
            feature_size=N_MELS, sampling_rate=SAMPLE_RATE, hop_length=160, chunk_length=SECONDS, n_fft=400
        )
        self._session = cpu_session(str(self.path), threads)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [N_MELS, N_FRAMES] or len(outputs) != 1:
            raise ValueError(
                f"{self.path} is not a Smart Turn v3 graph: inputs "
                f"{[(i.name, i.shape) for i in inputs]}, outputs {[(o.name, o.shape) for o in outputs]}"
            )
        self._input = inputs[0].name

    def features(self, audio: np.ndarray) -> np.ndarray:
        """float32 [80, 800] log-mel of the last 8 s of `audio` (16 kHz mono, int16 PCM or float
        in [-1, 1]; shorter audio is zero-padded at the start)."""
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise ValueError(f"audio must be 1-D mono samples, got shape {audio.shape}")
        x = np.zeros(N_SAMPLES, dtype=np.float32)
        tail = audio[-N_SAMPLES:]
        if tail.dtype == np.int16:
            np.multiply(tail, _INT16_SCALE, out=x[N_SAMPLES - len(tail) :], casting="unsafe")
        else:
            x[N_SAMPLES - len(tail) :] = tail
            if not np.isfinite(x).all():
                raise ValueError("audio holds NaN or infinite samples")
        x -= x.mean()
        x /= np.sqrt(x.var() + _NORM_EPS)
        mel = self._extractor(x, padding=0)
        if mel.shape != (N_MELS, N_FRAMES):  # a changed extractor must not feed the model garbage
            raise ValueError(f"feature extractor returned {mel.shape}, expected ({N_MELS}, {N_FRAMES})")
        return np.asarray(mel, dtype=np.float32)

    def predict(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [B]: for each clip, the probability that its speaker has finished."""
        if not clips:
            return np.zeros(0, dtype=np.float32)
        return self.predict_features(np.stack([self.features(c) for c in clips]))

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """float32 [B] from ready features ``[B, 80, 800]``: one onnxruntime call."""
        if features.ndim != 3 or features.shape[1:] != (N_MELS, N_FRAMES):
            raise ValueError(f"features must have shape (B, {N_MELS}, {N_FRAMES}), got {features.shape}")
        (out,) = self._session.run(None, {self._input: features.astype(np.float32, copy=False)})
        return np.asarray(out, dtype=np.float32).reshape(len(features))

    def predict_one(self, audio: np.ndarray) -> float:
        return float(self.predict([audio])[0])


class SmartTurnBatcher:
    """Scores pauses from many sessions together: every ``score()`` awaited while the model
    is busy (or in the same event-loop tick) joins the next batch, one ``predict`` call each,
    run on a single worker thread (so Smart Turn never takes more than one core).

    Bad audio (e.g. not mono) raises in its own ``score()`` only: the other clips of the
    batch are still scored. A failure of the model call itself raises in every ``score()`` of
    that batch. A cancelled ``score()`` is dropped. ``aclose()`` stops the worker thread.
    """

    def __init__(self, model: SmartTurn, max_batch: int = 16, executor: Executor | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model = model
        self.max_batch = max_batch
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")
        self._pending: list[tuple[np.ndarray, asyncio.Future[float]]] = []
        self._drain: asyncio.Task[None] | None = None
        self.batches = 0  # model calls made
        self.scored = 0  # clips scored

    async def score(self, audio: np.ndarray) -> float:
        """The probability that the speaker of `audio` (their turn so far, trailing silence
        included, 16 kHz) has finished."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        self._pending.append((audio, fut))
        if self._drain is None or self._drain.done():
            self._drain = loop.create_task(self._run())
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let the rest of this tick's requests join the first batch
        while self._pending:
            batch = [(a, f) for a, f in self._pending[: self.max_batch] if not f.cancelled()]
            del self._pending[: self.max_batch]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._predict, [a for a, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiter of this batch
                log.warning("Smart Turn batch of %d failed: %s", len(batch), exc)
                results = [exc] * len(batch)
            for (_, f), r in zip(batch, results, strict=True):
                if f.done():
                    continue
                if isinstance(r, Exception):
                    f.set_exception(r)
                else:
                    f.set_result(r)

    def _predict(self, clips: list[np.ndarray]) -> list[float | Exception]:
        """Worker thread: features clip by clip (a bad clip fails alone), then one model call."""
        rows: list[np.ndarray] = []
        results: list[float | Exception] = []
        for clip in clips:
            try:
                rows.append(self.model.features(clip))
                results.append(0.0)
            except Exception as exc:  # noqa: BLE001 - this clip's own error
                results.append(exc)
        if rows:
            probs = iter(self.model.predict_features(np.stack(rows)).tolist())
            results = [r if isinstance(r, Exception) else next(probs) for r in results]
            self.batches += 1
            self.scored += len(rows)
        return results

    async def aclose(self) -> None:
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)
        if self._own_executor:
            self._executor.shutdown(wait=True)
