"""Silero VAD v6 for many sessions at once: per-stream state, one ONNX call per tick (the
gateway scores its sessions' audio with it; the orchestrator, raw frames written straight to it).

This module owns voice-activity *probabilities* and nothing else (turn logic lives in
``services.orchestrator.endpoint``). It runs the Silero VAD v6 ONNX graph that ships inside
faster-whisper (``faster_whisper/assets/silero_vad_v6.onnx``) with onnxruntime, no torch.

Streaming contract (16 kHz, 512-sample windows of 32 ms): each call feeds the model the
64 samples that ended the stream's previous window (its *context*, zeros at the start)
followed by the 512 new samples, plus the stream's LSTM state ``h``/``c`` ([128] each).
A :class:`VadStream` holds one session's state and context; streams never share them.

Batching: the shipped graph cannot batch streams (its dim 0 is one stream's time) and runs its
encoder's convolutions one row at a time. At load time ``shared.vad_graph`` rewrites it: dim 0
becomes a batch of independent streams, and the encoder runs as one matrix product per layer
over all of them. Row i of a batch is then stream i's next window, and ``process`` runs all
ready streams in one ``session.run``. The unmodified graph is kept as a single-stream
reference (``process_reference``); the unit tests prove the two agree window by window.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from shared.vad_graph import HIDDEN, fold_encoder, patch_for_batching

__all__ = [
    "CONTEXT",
    "HIDDEN",
    "SAMPLE_RATE",
    "WINDOW",
    "SileroVad",
    "VadStream",
    "default_model_path",
]

SAMPLE_RATE = 16000
WINDOW = 512  # samples per window (32 ms at 16 kHz)
CONTEXT = 64  # samples of the previous window prepended to each window
_STATE = 2 * HIDDEN + CONTEXT  # one stream's memory: h | c | context
_H = slice(0, HIDDEN)
_C = slice(HIDDEN, 2 * HIDDEN)
_CTX = slice(2 * HIDDEN, _STATE)
_INT16_SCALE = np.float32(1.0 / 32768.0)


def default_model_path() -> Path:
    """The Silero VAD v6 ONNX file shipped inside the faster-whisper package.

    Found through the package's location without importing it (importing faster_whisper
    pulls in ctranslate2 and PyAV, ~0.1 s and a lot of memory the orchestrator never needs).
    """
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("faster-whisper is not installed; it ships the Silero VAD model")
    path = Path(next(iter(spec.submodule_search_locations)), "assets", "silero_vad_v6.onnx")
    if not path.is_file():
        raise FileNotFoundError(f"Silero VAD model not found at {path}; is faster-whisper installed?")
    return path


class VadStream:
    """One session's VAD memory: LSTM state h, c ([128] each) and the last 64 samples.

    Create with :meth:`SileroVad.new_stream`; ``windows`` counts windows processed since
    creation or the last :meth:`reset`, so ``windows * WINDOW`` is the stream position in
    samples.
    """

    __slots__ = ("_state", "windows")

    def __init__(self) -> None:
        self._state = np.zeros(_STATE, dtype=np.float32)
        self.windows = 0

    def reset(self) -> None:
        """Forget everything: zero state and context, as for a brand-new stream."""
        self._state.fill(0.0)
        self.windows = 0

    @property
    def h(self) -> np.ndarray:
        return self._state[_H]

    @property
    def c(self) -> np.ndarray:
        return self._state[_C]

    @property
    def context(self) -> np.ndarray:
        return self._state[_CTX]


def cpu_session(model: bytes | str, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session for `model` (bytes, or a file's path) on `threads` threads,
    sequential, fully optimised, quiet."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


class SileroVad:
    """Batched streaming Silero VAD v6.

    ``process(streams, windows)`` scores one 512-sample window for each stream in a single
    onnxruntime call and advances each stream's state. A stream may appear at most once
    per call (its next window depends on the state this call produces).
    """

    def __init__(self, path: str | None = None, threads: int = 1) -> None:
        self.path = Path(path) if path is not None else default_model_path()
        self.threads = threads
        self._original = self.path.read_bytes()
        model = onnx.load_from_string(self._original)
        self._session = cpu_session(fold_encoder(patch_for_batching(model)).SerializeToString(), threads)
        self._reference: ort.InferenceSession | None = None
        self._capacity = 0
        self._grow(16)

    def _grow(self, capacity: int) -> None:
        self._capacity = capacity
        self._gathered = np.zeros((capacity, _STATE), dtype=np.float32)
        self._input = np.zeros((capacity, CONTEXT + WINDOW), dtype=np.float32)
        self._h = np.zeros((capacity, HIDDEN), dtype=np.float32)
        self._c = np.zeros((capacity, HIDDEN), dtype=np.float32)
        self._scatter = np.zeros((capacity, _STATE), dtype=np.float32)

    def new_stream(self) -> VadStream:
        return VadStream()

    def process(self, streams: list[VadStream], windows: np.ndarray) -> np.ndarray:
        """Speech probability of each stream's next window.

        ``windows``: float32 ``[B, 512]`` in [-1, 1] (int16 PCM is accepted and scaled),
        row i belonging to ``streams[i]``. Returns float32 ``[B]``; updates each stream's
        state and context. ``B == 0`` returns an empty array without running the model.
        """
        n = len(streams)
        windows = np.asarray(windows)
        if windows.shape != (n, WINDOW):
            raise ValueError(f"windows must have shape ({n}, {WINDOW}), got {windows.shape}")
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        if n > 1 and len({id(s) for s in streams}) != n:
            raise ValueError("a stream appears more than once in one batch")
        if n > self._capacity:
            self._grow(max(n, 2 * self._capacity))

        gathered = self._gathered[:n]
        np.stack([s._state for s in streams], out=gathered)
        inp = self._input[:n]
        inp[:, :CONTEXT] = gathered[:, _CTX]
        if windows.dtype == np.int16:
            np.multiply(windows, _INT16_SCALE, out=inp[:, CONTEXT:], casting="unsafe")
        else:
            inp[:, CONTEXT:] = windows
        h = self._h[:n]
        c = self._c[:n]
        h[...] = gathered[:, _H]
        c[...] = gathered[:, _C]

        probs, hn, cn = self._session.run(
            None, {"input": inp, "h": h.reshape(1, n, HIDDEN), "c": c.reshape(1, n, HIDDEN)}
        )

        new = self._scatter[:n]
        new[:, _H] = hn[0]
        new[:, _C] = cn[0]
        new[:, _CTX] = inp[:, -CONTEXT:]
        for stream, row in zip(streams, new, strict=True):
            stream._state[...] = row
            stream.windows += 1
        return probs

    def process_reference(self, stream: VadStream, window: np.ndarray) -> float:
        """The unpatched, single-stream graph on one window: the ground truth ``process``
        must match. Updates ``stream`` exactly as ``process`` would."""
        window = np.asarray(window)
        if window.shape != (WINDOW,):
            raise ValueError(f"window must have shape ({WINDOW},), got {window.shape}")
        if self._reference is None:
            self._reference = cpu_session(self._original, self.threads)
        if window.dtype == np.int16:
            window = window.astype(np.float32) * _INT16_SCALE
        inp = np.concatenate([stream.context, window.astype(np.float32, copy=False)])[None, :]
        probs, hn, cn = self._reference.run(
            None,
            {"input": inp, "h": stream.h.reshape(1, 1, HIDDEN), "c": stream.c.reshape(1, 1, HIDDEN)},
        )
        stream._state[_H] = hn.reshape(HIDDEN)
        stream._state[_C] = cn.reshape(HIDDEN)
        stream._state[_CTX] = inp[0, -CONTEXT:]
        stream.windows += 1
        return float(probs.reshape(-1)[0])
