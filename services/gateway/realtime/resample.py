"""Streaming PCM16 rate conversion: the Realtime API's 24 kHz to the session's rate and the
TTS voice's rate back to 24 kHz.

A polyphase windowed-sinc filter (Kaiser window) for the rational ratio `dst/src`, applied
chunk by chunk: the filter's history carries over, so resampling a stream in pieces gives
the same samples as resampling it whole, and every input sample is used exactly once.
"""

from __future__ import annotations

from math import gcd

import numpy as np

TAPS = 16  # filter taps per output sample (per phase)


class Resampler:
    def __init__(self, src: int, dst: int, taps: int = TAPS) -> None:
        if src <= 0 or dst <= 0:
            raise ValueError(f"sample rates must be positive, not {src} -> {dst}")
        g = gcd(src, dst)
        self.src, self.dst = src, dst
        self.up, self.down = dst // g, src // g
        self.taps = taps
        if self.up != self.down:
            n = self.up * taps
            cutoff = 0.5 * min(src, dst) * 0.92 / (src * self.up)  # cycles per upsampled sample
            m = np.arange(n) - (n - 1) / 2
            h = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(n, 8.0) * self.up
            # phase p, tap k -> h[p + k * up]: the weights of x[i0 - k] for an output at phase p
            self._bank = h.reshape(taps, self.up).T.astype(np.float32).copy()
        self._hist = np.zeros(taps - 1, dtype=np.float32)  # the last taps-1 input samples
        self._consumed = 0  # input samples seen
        self._produced = 0  # output samples made

    @property
    def delay(self) -> int:
        """Output samples the filter lags behind its input (half the filter)."""
        return 0 if self.up == self.down else self.taps * self.dst // (2 * self.src)

    def process(self, pcm: bytes) -> bytes:
        """PCM16LE mono at `src` in, PCM16LE mono at `dst` out (as much as the input allows)."""
        if self.up == self.down:
            return pcm
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        buf = np.concatenate([self._hist, x])
        self._consumed += len(x)
        # output n sits at upsampled position n*down, i.e. after input i0 = n*down // up
        last = (self._consumed * self.up - 1) // self.down  # the last output whose i0 we have
        n = np.arange(self._produced, last + 1, dtype=np.int64)
        if len(n):
            pos = n * self.down
            i0 = pos // self.up - (self._consumed - len(x)) + (self.taps - 1)  # index into buf
            phase = pos % self.up
            idx = i0[:, None] - np.arange(self.taps)[None, :]
            y = np.einsum("nk,nk->n", buf[idx], self._bank[phase])
            self._produced = int(last + 1)
        else:
            y = np.empty(0, dtype=np.float32)
        self._hist = buf[len(buf) - (self.taps - 1) :].copy()
        return np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()

    def flush(self) -> bytes:
        """The tail still inside the filter (call at the end of a stream)."""
        if self.up == self.down:
            return b""
        return self.process(bytes(2 * (self.taps // 2)))
