"""A stub stack with realistic model delays (so a kill lands inside a job), supervised the way
`jarvis up` supervises it, and helpers to talk to it and kill its processes mid-turn."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from jarvis.launcher import Proc, Stack
from jarvis.redis_server import free_port
from services.stt.stub import StubStt
from shared import redis_url
from shared.messages import owner_key
from shared.model import SttRequest
from tests.support.client import Client
from tests.support.speech import concat, have_espeak, silence, speak

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the test speech")

STT_DELAY = 0.5  # seconds per transcript
LLM_DELAY = 0.06  # seconds per token (a reply of ~9 words streams for ~0.5 s)
TTS_DELAY = 0.03  # seconds per 100 ms audio chunk
DEADLINE_S = 5.0  # a turn hit by a kill completes or errors within this


def fault_stack(tmp: Path, **env: str) -> Stack:
    return Stack(
        profile="stub",
        port=free_port(),
        workdir=tmp,
        orchestrators=2,
        stub_llm_delay=LLM_DELAY,
        stub_stt_delay=STT_DELAY,
        stub_tts_delay=TTS_DELAY,
        env={"JARVIS_LEASE_MS": "1500", **env},
    )


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = fault_stack(tmp_path_factory.mktemp("faults"))
    s.start(timeout=180)
    s.watch()
    try:
        yield s
    finally:
        s.stop()


async def transcript_of(samples: np.ndarray) -> str:
    """What the stub STT says for these words when it hears all of them."""
    async for t in StubStt().infer(SttRequest(samples.astype("<i2").tobytes(), 16000)):
        return t.text
    return ""


_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spoken_seconds(transcript: str) -> float:
    """The stub STT's transcript ("I spoke for two point one seconds") as seconds of speech."""
    words = transcript.split()
    i = words.index("point")
    return _DIGITS.index(words[i - 1]) + _DIGITS.index(words[i + 1]) / 10


def all_words(got: str, want: str) -> bool:
    """The transcript covers the whole question (one 20 ms frame more or less of voiced audio
    can move the stub's rounding by a tenth; a fragment is far shorter)."""
    return abs(spoken_seconds(got) - spoken_seconds(want)) <= 0.15


QUESTIONS = ["What is the capital of Spain", "Tell me about the weather in Paris today"]


async def question(i: int) -> tuple[np.ndarray, str]:
    words = speak(QUESTIONS[i % len(QUESTIONS)])
    return concat(silence(0.3), words, silence(0.1)), await transcript_of(words)


class Talker:
    """A client that keeps its microphone open (silence between questions), and reconnects
    (resuming with its secret and last event id) when its connection drops."""

    def __init__(self, stack: Stack | None, dial: Callable[[], Awaitable[Client]] | None = None) -> None:
        self.stack = stack
        self.dial = dial  # how to reach a gateway (default: Client.open(stack.url))
        self.client: Client | None = None
        self.clients: list[Client] = []
        self.sid: str | None = None
        self.secret: str | None = None
        self._mic: asyncio.Task | None = None
        self._queue: list[np.ndarray] = []

    async def open(self) -> Talker:
        await self._connect()
        await self.client.wait_for("state", state="LISTENING")  # type: ignore[union-attr]
        self._mic = asyncio.create_task(self._stream())
        return self

    async def _connect(self) -> None:
        kw: dict = {}
        if self.sid:
            kw = {"session_id": self.sid, "resume_secret": self.secret}
            last = [e["id"] for c in self.clients for e in c.events if e.get("id")]
            if last:
                kw["last_event_id"] = max(last, key=lambda i: tuple(map(int, i.split("-"))))
        c = await (self.dial() if self.dial else Client.open(self.stack.url))
        ready = await c.start(**kw)
        self.sid = ready["session_id"]
        self.secret = ready.get("resume_secret") or self.secret
        self.client = c
        self.clients.append(c)

    def ask(self, samples: np.ndarray) -> None:
        self._queue.append(samples)

    async def _stream(self) -> None:
        frame = 320
        quiet = bytes((1,)) + bytes(frame * 2)
        t0 = time.perf_counter()
        n = 0
        buf = np.zeros(0, dtype="<i2")
        while True:
            if not len(buf) and self._queue:
                buf = self._queue.pop(0)
            if len(buf):
                chunk, buf = buf[:frame], buf[frame:]
                data = bytes((1,)) + np.pad(chunk, (0, frame - len(chunk))).astype("<i2").tobytes()
            else:
                data = quiet
            try:
                await self.client.ws.send(data)  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - the gateway died: reconnect and resume
                await self._reconnect()
                continue
            n += 1
            delay = t0 + n * 0.02 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _reconnect(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                await self._connect()
                return
            except Exception:  # noqa: BLE001 - not listening yet
                await asyncio.sleep(0.1)
        raise TimeoutError("could not reconnect")

    def events(self, kind: str, **match) -> list[dict]:
        seen: dict[str, dict] = {}
        out = []
        for c in self.clients:
            for e in c.of(kind, **match):
                if e.get("id") in seen:
                    continue
                seen[e.get("id") or str(len(out))] = e
                out.append(e)
        return out

    async def wait_for(self, kind: str, timeout: float = 20.0, **match) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(kind, **match)
            if found:
                return found[0]
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {kind} {match} in {timeout}s; saw {[e['type'] for e in self.events_all()]}")

    def events_all(self) -> list[dict]:
        return [e for c in self.clients for e in c.events]

    async def close(self) -> None:
        if self._mic:
            self._mic.cancel()
            await asyncio.gather(self._mic, return_exceptions=True)
        for c in self.clients:
            await c.close()


def proc(stack: Stack, name: str) -> Proc:
    return next(p for p in stack.procs if p.name == name)


def owner_pid(stack: Stack, sid: str) -> int:
    r = redis_url.sync_client(stack.redis_url)
    try:
        return int(r.get(owner_key(sid)).decode().split("-")[-2])
    finally:
        r.close()


def kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def history(stack: Stack, sid: str) -> list[dict]:
    path = stack.workdir / "sessions" / f"{sid}.json"
    return json.loads(path.read_text())["history"] if path.exists() else []
