"""`jarvis talk --realtime`: the same command-line client as `jarvis talk`, speaking the OpenAI
Realtime API through the official `openai` SDK (docs/REALTIME.md). Streams a WAV at
real-time pace with server VAD (or sends a typed question), prints what the server heard
and the reply as it streams, and saves the spoken reply as a WAV (24 kHz)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from openai import AsyncOpenAI

from jarvis.talk import load_wav

RATE = 24000
FRAME = RATE // 50  # 20 ms


def base_url_of(url: str) -> str:
    """`ws://host:port/ws` (the `jarvis talk` URL) -> `http://host:port/v1` (the SDK's base_url)."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme in ("wss", "https") else "http"
    return f"{scheme}://{parts.netloc}/v1"


@dataclass
class RealtimeTalkResult:
    events: list[Any] = field(default_factory=list)  # the SDK's typed server events
    audio: bytearray = field(default_factory=bytearray)  # reply audio, PCM16 at 24 kHz
    session_id: str | None = None
    resume_secret: str | None = None  # what resuming the session takes (with session_id)

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.type == kind]


async def talk_realtime(
    url: str,
    *,
    wav: str | Path | None = None,
    text: str | None = None,
    token: str | None = None,
    session_id: str | None = None,
    resume_secret: str | None = None,
    out: str | Path | None = None,
    wait_s: float = 60.0,
    quiet: bool = False,
) -> RealtimeTalkResult:
    """One turn over the Realtime API: a spoken WAV (server VAD) or a typed `text`."""
    if (wav is None) == (text is None):
        raise ValueError("give a WAV to speak or a text to type, not both")
    # a new session gets a resume secret of this client's making (the Realtime protocol has no
    # event that could carry one from the server); resuming takes the same one back
    result = RealtimeTalkResult(resume_secret=resume_secret or secrets.token_urlsafe(24))
    client = AsyncOpenAI(base_url=base_url_of(url), api_key=token or "none")
    query = {"resume_secret": result.resume_secret}
    if session_id:
        query["session_id"] = session_id
    try:
        async with client.realtime.connect(model="jarvis", extra_query=query) as conn:
            await conn.session.update(
                session={
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "turn_detection": {"type": "server_vad"},
                            "transcription": {"model": "jarvis-stt"},
                        }
                    },
                }
            )
            done = asyncio.Event()
            reader = asyncio.create_task(_read(conn, result, done, quiet))
            try:
                if text is not None:
                    await conn.conversation.item.create(
                        item={
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": text}],
                        }
                    )
                    await conn.response.create()
                else:
                    assert wav is not None
                    samples = load_wav(wav, RATE)
                    await _stream(conn, np.concatenate([samples, np.zeros(RATE // 2, dtype="<i2")]), done)
                    while not done.is_set():  # the server's clock is the audio: keep it running
                        await _stream(conn, np.zeros(FRAME * 10, dtype="<i2"), done)
                await asyncio.wait_for(done.wait(), wait_s)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    finally:
        await client.close()
    if out and result.audio:
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(bytes(result.audio))
    return result


async def _stream(conn: Any, samples: np.ndarray, done: asyncio.Event) -> None:
    start = time.perf_counter()
    for n, i in enumerate(range(0, len(samples), FRAME)):
        if done.is_set():
            return
        chunk = samples[i : i + FRAME].astype("<i2").tobytes()
        await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        delay = start + (n + 1) * FRAME / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


async def _read(conn: Any, result: RealtimeTalkResult, done: asyncio.Event, quiet: bool) -> None:
    def say(line: str, end: str = "\n") -> None:
        if not quiet:
            print(line, end=end, flush=True)

    async for ev in conn:
        result.events.append(ev)
        if ev.type == "conversation.created":
            result.session_id = ev.conversation.id
            say(f"[session {ev.conversation.id}]")
        elif ev.type == "conversation.item.input_audio_transcription.completed":
            say(f"you: {ev.transcript}")
        elif ev.type in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            say(ev.delta, end="")
        elif ev.type == "response.output_audio.delta":
            result.audio += base64.b64decode(ev.delta)
        elif ev.type == "error":
            print(f"\n[error {ev.error.code}] {ev.error.message}", file=sys.stderr)
        elif ev.type == "response.done":
            say(f"\n[{ev.response.status}]")
            done.set()
