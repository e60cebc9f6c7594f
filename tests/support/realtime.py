"""A Realtime API test client on the official `openai` SDK: every server event is checked
against the SDK's own types, strictly (no coercion, no field the SDK does not know)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter

RATE = 24000
FRAME = 480  # 20 ms at 24 kHz
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


def _no_extras(model: Any, where: str) -> None:
    if isinstance(model, BaseModel):
        extra = model.model_extra or {}
        assert not extra, f"{where}: fields the SDK does not know: {sorted(extra)}"
        for name in type(model).model_fields:
            _no_extras(getattr(model, name), f"{where}.{name}")
    elif isinstance(model, list):
        for i, m in enumerate(model):
            _no_extras(m, f"{where}[{i}]")


def validate(raw: str | bytes) -> Any:
    """The SDK's typed event for one server frame; raises if it does not match exactly."""
    ev = SERVER_EVENT.validate_json(raw, strict=True)
    _no_extras(ev, json.loads(raw)["type"])
    return ev


def session_file(
    workdir: Path, sid: str, until: Callable[[dict], Any] = lambda f: True, wait_s: float = 5.0
) -> dict:
    """A stack's session file, once `until` holds for it (it is saved just after the events go out)."""
    path = workdir / "sessions" / f"{sid}.json"
    deadline = time.monotonic() + wait_s
    while True:
        found = json.loads(path.read_text()) if path.exists() else None
        if found is not None and until(found) or time.monotonic() > deadline:
            assert found is not None, f"no session file {path}"
            return found
        time.sleep(0.05)


def b64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<i2").tobytes()).decode()


def pcm_of(events: list[dict]) -> np.ndarray:
    """The reply audio of `response.output_audio.delta` events as int16 samples at 24 kHz."""
    data = b"".join(base64.b64decode(e["delta"]) for e in events)
    return np.frombuffer(data, dtype="<i2")


@dataclass
class Session:
    conn: Any  # the SDK's AsyncRealtimeConnection
    events: list[dict] = field(default_factory=list)
    models: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None

    async def _read(self) -> None:
        try:
            while True:
                raw = await self.conn.recv_bytes()
                try:
                    self.models.append(validate(raw))
                except Exception as exc:  # noqa: BLE001 - collected; the test asserts none
                    self.failures.append(f"{raw[:300]!r}: {exc}")
                ev = json.loads(raw)
                ev["_t"] = time.time()
                self.events.append(ev)
                self._changed.set()
        except Exception:  # noqa: BLE001 - closed
            self._changed.set()

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def wait_for(
        self,
        kind: str,
        timeout: float = 30.0,  # noqa: ASYNC109 - one deadline over many waits
        count: int = 1,
        after: int = 0,
        **match: Any,
    ) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = [
                e
                for e in self.events[after:]
                if e["type"] == kind and all(e.get(k) == v for k, v in match.items())
            ]
            if len(found) >= count:
                return found[count - 1]
            left = deadline - time.monotonic()
            if left <= 0 or (self._task is not None and self._task.done()):
                raise TimeoutError(
                    f"no {kind} {match or ''} (count {count}) in {timeout}s; saw {self.types()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def send(self, event: dict) -> None:
        await self.conn.send(event)

    async def stream(self, samples: np.ndarray, realtime: bool = True) -> None:
        """int16 samples at 24 kHz as 20 ms `input_audio_buffer.append` events, paced like a microphone."""
        start = time.perf_counter()
        for n, i in enumerate(range(0, len(samples), FRAME)):
            await self.conn.input_audio_buffer.append(audio=b64(samples[i : i + FRAME]))
            if realtime:
                delay = start + (n + 1) * FRAME / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def keep_streaming_silence(self, stop: asyncio.Event) -> None:
        """Silence until `stop` (the server's clock is the audio, as with a live microphone)."""
        quiet = np.zeros(FRAME, dtype=np.int16)
        start, n = time.perf_counter(), 0
        while not stop.is_set():
            await self.conn.input_audio_buffer.append(audio=b64(quiet))
            n += 1
            delay = start + n * FRAME / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def realtime_session(
    port: int, token: str = "unused", session_id: str | None = None, resume_secret: str | None = None
) -> AsyncIterator[Session]:
    """A Realtime connection through `AsyncOpenAI(base_url=...).realtime.connect()`."""
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token)
    query = {"session_id": session_id} if session_id else {}
    if resume_secret:
        query["resume_secret"] = resume_secret
    async with client.realtime.connect(model="jarvis", extra_query=query) as conn:
        s = Session(conn)
        s._task = asyncio.create_task(s._read())
        try:
            yield s
        finally:
            s._task.cancel()
            await asyncio.gather(s._task, return_exceptions=True)
    await client.close()
