"""Chatterbox text-to-speech (resemble-ai chatterbox-tts 0.1.7, torch): the TTS worker's GPU model adapter.

Owns: loading `chatterbox.tts.ChatterboxTTS` (imported lazily in load(), so this module
imports without torch or chatterbox installed: they live in the `chatterbox` extra /
image only), voice selection (built-in voice, a reference clip from settings, or a
named clip from a voices directory), and streaming: the request text is split into
sentences, each sentence is generated on its own and its audio is yielded as ~100 ms
PCM16 chunks, so the first audio leaves after the first sentence, not the whole reply.

Concurrency: `chatterbox_replicas` copies of the model are loaded (the worker's job
concurrency), each with its own voice state; a sentence takes whichever replica is free, so
one session's synthesis never waits behind another's while a replica is idle (one model
object cannot run two generate() calls at once: its voice conditionals and the T3 decoder's
alignment state are per object). Warm-up: every replica generates one short sentence at
load, so the first user's first sentence does not pay for CUDA kernel selection and the
lazily built decoder.

Chatterbox 0.1.7 API used (checked against the released wheel):
`ChatterboxTTS.from_pretrained(device)`, `.sr` (24000),
`.generate(text, repetition_penalty=1.2, min_p=0.05, top_p=1.0, audio_prompt_path=None,
exaggeration=0.5, cfg_weight=0.5, temperature=0.8) -> torch.Tensor [1, N]` float in [-1, 1],
and `.conds` (the current voice conditionals; `generate(audio_prompt_path=...)` replaces them).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.tts.config import TtsSettings
from shared.model import AudioChunk, Model, TtsRequest, stream_in_thread

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 24000
_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "no",
    "approx",
    "a.m",
    "p.m",
}
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")
_VOICE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at . ! ? … (followed by space) and line breaks.

    Common abbreviations ("Dr.", "e.g.") and single initials ("J. Smith") don't end a sentence.
    """
    text = text.strip()
    if not text:
        return []
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start : m.start()].strip()
        if not piece:
            start = m.end()
            continue
        if m.group(0).strip() == "" and "\n" not in m.group(0):
            last = piece.rsplit(None, 1)[-1].rstrip(".").lower()
            if piece.endswith(".") and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
                continue  # not a sentence end: keep `start`, look at the next boundary
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if any(ch.isalnum() for ch in s)]


def to_pcm16(wav: Any) -> np.ndarray:
    """A model output (torch tensor [1, N] or [N], or array-like) of floats in [-1, 1] -> int16 samples.

    Values outside [-1, 1] are clipped, not wrapped.
    """
    if hasattr(wav, "detach"):
        wav = wav.detach()
    if hasattr(wav, "cpu"):
        wav = wav.cpu()
    if hasattr(wav, "numpy"):
        wav = wav.numpy()
    samples = np.asarray(wav, dtype=np.float32).reshape(-1)
    samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


WARMUP_TEXT = "Hello, this is a warm-up."


@dataclass(slots=True)
class _Replica:
    """One loaded model and the voice its conditionals were made from."""

    model: Any
    builtin_conds: Any
    prompt: str | None = None  # the clip the model's conds were made from (None: built-in voice)


class ChatterboxTts(Model[TtsRequest, AudioChunk]):
    """Chatterbox TTS. `ChatterboxTts(settings=None, **overrides)`; overrides are TtsSettings fields.

    Voice per request: `TtsRequest.voice` = a plain name resolved to
    `<chatterbox_voices_dir>/<name>.wav`; otherwise `chatterbox_voice_prompt`; otherwise the
    model's built-in voice. A reference clip is only re-embedded when the voice changes.
    """

    name = "chatterbox"

    def __init__(self, settings: TtsSettings | None = None, **overrides: Any) -> None:
        super().__init__()
        base = settings or TtsSettings()
        self.settings = TtsSettings.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self.sample_rate: int = DEFAULT_SAMPLE_RATE
        self._replicas: list[_Replica] = []
        self._free: queue.Queue[_Replica] = queue.Queue()  # replicas not generating right now
        self.load_seconds: float | None = None
        self.warmup_seconds: float | None = None

    @property
    def _model(self) -> Any:
        return self._replicas[0].model if self._replicas else None

    def _load_blocking(self) -> None:
        from chatterbox.tts import ChatterboxTTS  # lazy: torch + chatterbox only in the GPU image

        for _ in range(self.settings.chatterbox_replicas):
            model = ChatterboxTTS.from_pretrained(device=self.settings.chatterbox_device)
            self.sample_rate = int(getattr(model, "sr", DEFAULT_SAMPLE_RATE))
            self._replicas.append(_Replica(model, getattr(model, "conds", None)))

    def _warm_up_blocking(self) -> None:
        prompt = self.voice_prompt(None)
        for r in self._replicas:
            self._generate_one(r, WARMUP_TEXT, prompt)
            self._free.put(r)

    async def load(self) -> None:
        if self._replicas:
            return
        prompt = self.settings.chatterbox_voice_prompt
        if prompt is not None and not prompt.is_file():
            raise FileNotFoundError(f"Chatterbox reference clip not found: {prompt}")
        t0 = time.perf_counter()
        await asyncio.to_thread(self._load_blocking)
        self.load_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        await asyncio.to_thread(self._warm_up_blocking)
        self.warmup_seconds = time.perf_counter() - t1
        log.info(
            "Chatterbox: %d replica(s) loaded on %s in %.2f s, warmed up in %.2f s",
            len(self._replicas),
            self.settings.chatterbox_device,
            self.load_seconds,
            self.warmup_seconds,
        )
        await super().load()

    async def unload(self) -> None:
        self._replicas = []
        self._free = queue.Queue()
        await super().unload()
        try:  # give the VRAM back now rather than at the allocator's leisure
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def voice_prompt(self, voice: str | None) -> str | None:
        """The reference clip for a request's voice (None: the model's built-in voice)."""
        s = self.settings
        if voice:
            if s.chatterbox_voices_dir is None or not _VOICE_NAME.match(voice):
                raise ValueError(f"unknown voice {voice!r}")
            path = s.chatterbox_voices_dir / f"{voice}.wav"
            if not path.is_file():
                raise ValueError(f"unknown voice {voice!r}")
            return str(path)
        return str(s.chatterbox_voice_prompt) if s.chatterbox_voice_prompt else None

    def _generate_one(self, r: _Replica, sentence: str, prompt: str | None) -> Any:
        """One sentence on one replica (the caller owns the replica)."""
        s = self.settings
        kwargs: dict[str, Any] = {
            "exaggeration": s.chatterbox_exaggeration,
            "cfg_weight": s.chatterbox_cfg_weight,
            "temperature": s.chatterbox_temperature,
        }
        if prompt != r.prompt:
            if prompt is None:  # back to the built-in voice
                r.model.conds = r.builtin_conds
            else:  # generate() embeds the clip and keeps it as model.conds
                kwargs["audio_prompt_path"] = prompt
        wav = r.model.generate(sentence, **kwargs)
        r.prompt = prompt
        return wav

    def _generate(self, sentences: list[str], prompt: str | None) -> Iterator[AudioChunk]:
        step = max(1, self.sample_rate * self.settings.chatterbox_chunk_ms // 1000)
        for sentence in sentences:
            r = self._free.get()  # blocks this worker thread only while every replica is busy
            try:
                wav = self._generate_one(r, sentence, prompt)
            finally:
                self._free.put(r)
            samples = to_pcm16(wav)
            for i in range(0, samples.size, step):
                yield AudioChunk(pcm=samples[i : i + step].tobytes(), sample_rate=self.sample_rate)

    async def infer(self, request: TtsRequest) -> AsyncIterator[AudioChunk]:
        if not self._replicas:
            raise RuntimeError("ChatterboxTts.infer() before load()")
        sentences = split_sentences(request.text)
        if not sentences:
            return
        prompt = self.voice_prompt(request.voice)
        async for chunk in stream_in_thread(lambda: self._generate(sentences, prompt), maxsize=256):
            yield chunk
