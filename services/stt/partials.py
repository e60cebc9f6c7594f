"""Partial transcripts at a bounded cost per partial, however long the user has been talking.

A partial job carries the whole utterance so far. Decoding all of it every second costs more
the longer the turn gets (the decoder emits every word said so far, again). Instead the
utterance is cut at fixed offsets into whole chunks of `partial_chunk_s`: each whole chunk is
decoded once and its text remembered (keyed by its samples, so it needs no session state and a
chunk another process decoded is simply decoded again), and only the newest stretch after the
last whole chunk (shorter than a chunk) is decoded each time. The guess is the chunks' texts
then the stretch's. A word cut by a chunk edge may come out garbled in a partial; the final
transcript decodes the whole turn at once and is unaffected.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from shared.model import SttRequest, Transcript

Infer = Callable[[SttRequest], AsyncIterator[Transcript]]


class PartialTranscriber:
    def __init__(self, infer: Infer, chunk_s: float, min_tail_s: float, cache_size: int = 256) -> None:
        self.infer = infer
        self.chunk_s = chunk_s
        self.min_tail_s = min_tail_s
        self.cache_size = cache_size
        self._chunks: OrderedDict[bytes, str] = OrderedDict()  # chunk digest -> its text, LRU
        self.decoded_s = 0.0  # seconds of audio sent to the model (what a partial cost)

    async def _decode(self, pcm: bytes, rate: int) -> str:
        self.decoded_s += len(pcm) / 2 / rate
        parts = [t.text.strip() async for t in self.infer(SttRequest(pcm, rate, partial=True))]
        return " ".join(p for p in parts if p)

    async def _chunk(self, pcm: bytes, rate: int) -> str:
        key = hashlib.blake2b(pcm, digest_size=16, person=rate.to_bytes(4, "little")).digest()
        text = self._chunks.get(key)
        if text is None:
            text = await self._decode(pcm, rate)
            self._chunks[key] = text
            while len(self._chunks) > self.cache_size:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(key)
        return text

    async def transcribe(self, pcm: bytes, rate: int) -> str:
        """The best guess at the words in `pcm` (PCM16LE mono), speech still going on."""
        pcm = pcm[: len(pcm) // 2 * 2]
        step = int(self.chunk_s * rate) * 2
        whole = len(pcm) // step
        texts = [await self._chunk(pcm[i * step : (i + 1) * step], rate) for i in range(whole)]
        tail = pcm[whole * step :]
        if tail and len(tail) / 2 >= self.min_tail_s * rate:
            texts.append(await self._decode(tail, rate))
        return " ".join(t for t in texts if t)
