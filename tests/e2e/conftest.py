"""Fixtures for the end-to-end tests of the web client and the chat/vision pipelines.

One stub stack for the whole run (processes are the expensive part on a small machine): stub
STT/LLM/TTS, a slow-ish stub LLM (so a spoken reply starts late enough to be barged in on),
and a *real* VLM worker (`services.llm --role vlm`, the OpenAI-compatible client) pointed at
a fake OpenAI server that records what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from jarvis.launcher import Stack
from jarvis.redis_server import free_port
from tests.support.fake_openai import FakeOpenAI

STUB_LLM_DELAY = 0.12  # seconds per stub token: ~1.2 s before a spoken reply starts
VLM_REPLY = "I see a small red square on a white background."


@pytest.fixture(scope="session")
def fake_openai() -> FakeOpenAI:
    with FakeOpenAI(
        reply=VLM_REPLY, model="fake-vlm", chunk_chars=6, chunk_delay=0.02
    ) as api:  # paced like a model
        yield api


@pytest.fixture(scope="session")
def stub_stack(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Stack:
    workdir = tmp_path_factory.mktemp("e2e-stack")
    # stub STT/LLM/TTS; the VLM worker is the real OpenAI-compatible client, talking to the fake API
    st = Stack(
        profile="stub",
        port=free_port(),
        workdir=workdir,
        stub_llm_delay=STUB_LLM_DELAY,
        env={"JARVIS_VLM_BASE_URL": fake_openai.url},
    )
    with st:
        yield st


@pytest.fixture(scope="session")
def http_url(stub_stack: Stack) -> str:
    """The web client's address on the stub stack."""
    return f"http://{stub_stack.host}:{stub_stack.port}/"


# ---- a small protocol client ------------------------------------------------------------


class WsClient:
    """Collects every event and counts the audio; waits for events by type and predicate."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.events: list[dict] = []
        self.audio_frames = 0
        self.audio_bytes = 0
        self._seen = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for msg in self.ws:
                if isinstance(msg, bytes):
                    if msg[:1] == b"\x01":
                        self.audio_frames += 1
                        self.audio_bytes += len(msg) - 1
                else:
                    self.events.append(json.loads(msg))
                self._changed.set()
        except ConnectionClosed:
            pass

    async def send(self, obj: dict) -> None:
        await self.ws.send(json.dumps(obj))

    async def send_binary(self, tag: int, payload: bytes) -> None:
        await self.ws.send(bytes((tag,)) + payload)

    def mark(self) -> int:
        """An index into `events`: `wait` and `since` look only at what came after it."""
        return len(self.events)

    def since(self, mark: int, kind: str | None = None) -> list[dict]:
        return [e for e in self.events[mark:] if kind is None or e.get("type") == kind]

    async def wait(self, kind: str, pred=lambda e: True, *, after: int = 0, timeout: float = 20.0) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for e in self.events[after:]:
                if e.get("type") == kind and pred(e):
                    return e
                if e.get("type") == "error" and kind != "error":
                    raise AssertionError(f"error event while waiting for {kind}: {e}")
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(
                    f"no {kind!r} event in {timeout:.0f}s; got {[e.get('type') for e in self.events[after:]]}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


@asynccontextmanager
async def _ws_client(url: str) -> AsyncIterator[WsClient]:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=16 << 20) as ws:
        client = WsClient(ws)
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture
def ws_client():
    """`async with ws_client(url) as c:` a connected WsClient."""
    return _ws_client


def _png(width: int = 8, height: int = 6, rgb: tuple[int, int, int] = (220, 30, 30)) -> bytes:
    """A tiny solid-colour PNG, made by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def make_png():
    """`make_png(width=8, height=6, rgb=(r, g, b))`: PNG bytes."""
    return _png


# ---- the browser --------------------------------------------------------------------------

CHROMIUM = os.environ.get("JARVIS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _chromium_args(fake_audio: Path) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_audio}",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]


@pytest.fixture(scope="session")
def chromium_args():
    """`chromium_args(wav)`: launch flags for headless Chromium with `wav` as the (looped) microphone."""
    return _chromium_args


@pytest.fixture(scope="session")
def playwright_chromium() -> str:
    """The Chromium executable, or a skip saying what is missing."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip(
            "the playwright package is not installed (pip install playwright; no browser download needed)"
        )
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set JARVIS_CHROMIUM)")
    return CHROMIUM
