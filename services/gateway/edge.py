"""Silero VAD at the edge: the gateway scores its server-VAD sessions' audio, batched across
them, and sends it onward only while it matters to a turn.

Each session's audio is cut into 512-sample windows (`shared.vad`). Every window ready, across
all sessions, is scored in one model call per round; a round runs when audio completed a
window (an event, no polling timer), past 16 sessions at most every 16 ms, so under load each
call carries many sessions. Per session, a gate decides what goes on to `in:{sid}`:

* a window at or above `edge_gate` opens it; it stays open `edge_hangover_ms` after the last
  such window. While open, a round's windows are one `ScoredAudio` entry: their PCM and their
  probabilities.
* while closed, the last `edge_pre_roll_ms` of windows wait in a ring and go on with their
  audio when the gate opens (the turn's pre-roll); older ones are reported as silence, their
  probabilities only, `edge_silence_ms` of them per entry, so the orchestrator's detector clock
  still follows every window of audio.

The orchestrator keeps every decision; the gate only has to cover what it can slice (the
settings' note in `shared.config`). Before a session's command or detach, what was scored is
written first, so the session's input keeps its order; when a stream ends, the samples short
of a window are padded to one, so the next stream starts on the window grid.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shared.config import Settings
from shared.messages import ScoredAudio
from shared.vad import WINDOW, SileroVad, VadStream

log = logging.getLogger("jarvis.gateway.edge")

_WINDOW_BYTES = 2 * WINDOW
BATCH_ABOVE = 16  # sessions: past this many, VAD rounds are paced to batch them
BATCH_MS = 16  # half a window: each session has at most one window per round


@dataclass(slots=True)
class _Window:
    pcm: bytes | None  # None: silence whose audio is not sent
    prob: float
    ts: float


@dataclass(slots=True)
class EdgeStream:
    """One session's audio at the gateway: samples short of a window, windows to score, the
    gate, the pre-roll ring and what waits to be written."""

    sid: str
    vad: VadStream
    pending: bytearray = field(default_factory=bytearray)
    stamps: list[float] = field(default_factory=list)  # per whole window in `pending`: its stamp
    seen: int = 0  # windows scored
    open_until: int = 0  # the gate is open for windows with index below this
    ring: deque[_Window] = field(default_factory=deque)
    out: list[_Window] = field(default_factory=list)  # scored, in stream order, not yet written


class EdgeVad:
    """The gateway's scorer and gates; `put(sid, msg)` queues an entry for the session's input."""

    def __init__(self, vad: SileroVad, settings: Settings, put: Callable[[str, ScoredAudio], None]) -> None:
        self.vad = vad
        self.put = put
        window_ms = WINDOW * 1000 / 16000
        self.gate = settings.edge_gate
        self.ring_len = math.ceil(settings.edge_pre_roll_ms / window_ms)
        self.hangover = math.ceil(settings.edge_hangover_ms / window_ms)
        self.silence_len = max(1, math.ceil(settings.edge_silence_ms / window_ms))
        self.streams: dict[str, EdgeStream] = {}
        self._ready: dict[str, EdgeStream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.calls = 0  # model calls made (for tests and the bench)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge-vad")

    async def close(self) -> None:
        for sid in list(self.streams):
            self.end(sid)
        if self._task:
            self._task.cancel()

    # ---- sessions ------------------------------------------------------------------

    def open(self, sid: str) -> None:
        """`sid` uses server VAD from now on (a stream it had is ended first)."""
        self.end(sid)
        self.streams[sid] = EdgeStream(sid, self.vad.new_stream())

    def end(self, sid: str) -> None:
        """The stream stops (the client left, stopped, or changed to another trigger): score
        and write all of it, the samples short of a window padded to one."""
        s = self.streams.pop(sid, None)
        if s is None:
            return
        self._ready.pop(sid, None)
        if len(s.pending) % _WINDOW_BYTES:
            s.pending += bytes(_WINDOW_BYTES - len(s.pending) % _WINDOW_BYTES)
            s.stamps.append(s.stamps[-1] if s.stamps else 0.0)
        self._score([s])
        while s.ring:
            w = s.ring.popleft()
            s.out.append(_Window(None, w.prob, w.ts))
        self._write(s, everything=True)

    def has(self, sid: str) -> bool:
        return sid in self.streams

    # ---- audio ---------------------------------------------------------------------

    def audio(self, sid: str, pcm: bytes, ts: float) -> None:
        s = self.streams[sid]
        before = len(s.pending) // _WINDOW_BYTES
        s.pending += pcm
        done = len(s.pending) // _WINDOW_BYTES - before
        if done:
            s.stamps.extend([ts] * done)
            self._ready[sid] = s
            self._wake.set()

    def drain(self, sid: str) -> None:
        """Write what `sid` has scored, before an entry that must come after its audio."""
        s = self.streams.get(sid)
        if s is None:
            return
        if s.stamps:
            self._ready.pop(sid, None)
            self._score([s])
        self._write(s, everything=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            await self._wake.wait()
            if len(self.streams) > BATCH_ABOVE:
                # many sessions: a round at most every BATCH_MS, so one model call carries many
                # sessions' windows (a call per window costs ~2.5x the CPU at 50 sessions)
                pause = last + BATCH_MS / 1000 - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
            last = loop.time()
            self._wake.clear()
            try:
                self.round()
            except Exception:
                log.exception("edge VAD round failed")

    def round(self) -> None:
        """Score every session's ready windows (one model call for all of them) and queue
        what their gates let through."""
        ready, self._ready = list(self._ready.values()), {}
        self._score(ready)
        for s in ready:
            self._write(s, everything=False)

    # ---- scoring and the gate ------------------------------------------------------------

    def _score(self, streams: list[EdgeStream]) -> None:
        """Score every whole window of `streams`, one model call per round of windows."""
        live = [s for s in streams if s.stamps]
        while live:
            rows = np.stack([np.frombuffer(s.pending[:_WINDOW_BYTES], dtype="<i2") for s in live])
            probs = self.vad.process([s.vad for s in live], rows)
            self.calls += 1
            for s, row, prob in zip(live, rows, probs, strict=True):
                del s.pending[:_WINDOW_BYTES]
                self._gate(s, _Window(row.tobytes(), float(prob), s.stamps.pop(0)))
            live = [s for s in live if s.stamps]

    def _gate(self, s: EdgeStream, w: _Window) -> None:
        i = s.seen
        s.seen += 1
        if w.prob >= self.gate:
            s.open_until = i + 1 + self.hangover
        if i < s.open_until:
            s.out.extend(s.ring)  # the pre-roll, with its audio
            s.ring.clear()
            s.out.append(w)
            return
        s.ring.append(w)
        if len(s.ring) > self.ring_len:
            old = s.ring.popleft()
            s.out.append(_Window(None, old.prob, old.ts))

    def _write(self, s: EdgeStream, everything: bool) -> None:
        """Queue `s.out` as entries: runs of audio windows and runs of silent ones. A trailing
        run of silence shorter than `silence_len` waits for more, unless `everything`."""
        out = s.out
        if not out:
            return
        if not everything and len(out) < self.silence_len and all(w.pcm is None for w in out):
            return  # a short run of silence alone: wait for more
        start = 0
        for k in range(1, len(out) + 1):
            if k == len(out) or (out[k].pcm is None) != (out[start].pcm is None):
                run = out[start:k]
                probs = np.array([w.prob for w in run], dtype="<f4").tobytes()
                pcm = b"" if run[0].pcm is None else b"".join(w.pcm for w in run if w.pcm is not None)
                self.put(s.sid, ScoredAudio(probs, pcm, run[-1].ts))
                start = k
        s.out = []
