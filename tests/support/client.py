"""A raw WebSocket test client for the gateway: send frames, collect events and audio."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from shared import protocol as p

FRAME = 320  # 20 ms at 16 kHz


@dataclass
class Client:
    ws: ClientConnection
    events: list[dict] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    audio_log: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes) of each audio frame
    timeline: list[str] = field(default_factory=list)  # "audio" or the event type, in arrival order
    _task: asyncio.Task | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(cls, url: str, **kw) -> Client:
        ws = await connect(url, compression=None, max_size=32 << 20, **kw)
        c = cls(ws)
        c._task = asyncio.create_task(c._read())
        return c

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if isinstance(msg, bytes):
                    self.audio += msg[1:]
                    self.audio_log.append((time.time(), len(msg) - 1))
                    self.timeline.append("audio")
                else:
                    ev = json.loads(msg)
                    ev["_t"] = time.time()
                    self.events.append(ev)
                    self.timeline.append(ev["type"])
                self._changed.set()
        except Exception:  # noqa: BLE001 - closed
            self._changed.set()

    async def close(self) -> None:
        await self.ws.close()
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)

    async def send(self, obj: dict | str | bytes) -> None:
        await self.ws.send(json.dumps(obj) if isinstance(obj, dict) else obj)

    async def start(self, **kw) -> dict:
        await self.send({"type": "start", **kw})
        return await self.wait_for("ready")

    def of(self, kind: str, **match) -> list[dict]:
        return [e for e in self.events if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]

    async def wait_for(self, kind: str, timeout: float = 20.0, count: int = 1, **match) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = self.of(kind, **match)
            if len(found) >= count:
                return found[count - 1]
            left = deadline - time.monotonic()
            if left <= 0 or self._task.done():
                seen = [e["type"] for e in self.events]
                raise TimeoutError(f"no {kind} {match or ''} (count {count}) in {timeout}s; saw {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def stream(self, samples: np.ndarray, realtime: bool = True) -> None:
        """Send int16 samples as 20 ms audio frames, paced like a microphone."""
        start = time.perf_counter()
        for n, i in enumerate(range(0, len(samples), FRAME)):
            frame = samples[i : i + FRAME]
            if len(frame) < FRAME:
                frame = np.pad(frame, (0, FRAME - len(frame)))
            await self.ws.send(bytes((p.AUDIO,)) + frame.astype("<i2").tobytes())
            if realtime:
                delay = start + (n + 1) * 0.02 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
