"""`jarvis talk`: a command-line client. Streams a WAV (or a typed question, or an image
with a question) to a running Jarvis at real-time pace, prints events as they arrive, and
saves the spoken reply as a WAV."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

from jarvis.events import print_event
from shared import protocol as p

FRAME_MS = 20


def load_wav(path: str | Path, rate: int = 16000) -> np.ndarray:
    """PCM16 mono at `rate`: downmixed and resampled (linear) when the file differs."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, src_rate = w.getnchannels(), w.getframerate()
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    data = data.astype(np.float32)
    if src_rate != rate and len(data):
        n = int(len(data) * rate / src_rate)
        data = np.interp(np.linspace(0, len(data) - 1, n), np.arange(len(data)), data)
    return data.clip(-32768, 32767).astype("<i2")


@dataclass
class TalkResult:
    events: list[dict] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    sample_rate: int = 0
    session_id: str | None = None
    resume_secret: str | None = None

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]


async def talk(
    url: str,
    *,
    wav: str | Path | None = None,
    pcm: np.ndarray | None = None,
    text: str | None = None,
    image: str | Path | None = None,
    pipeline: str | None = None,
    token: str | None = None,
    session_id: str | None = None,
    resume_secret: str | None = None,
    turns: int = 1,
    timeout: float = 120.0,
    realtime: bool = True,
    quiet: bool = False,
) -> TalkResult:
    """Run one exchange; returns every event and the reply audio."""
    res = TalkResult()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    if pipeline is None:
        pipeline = "vision" if image else "chat" if text else "sts"
    async with connect(url, additional_headers=headers, compression=None, max_size=16 << 20) as ws:
        start: dict = {"type": "start", "pipeline": pipeline}
        if session_id:
            start.update(session_id=session_id, resume_secret=resume_secret)
        await ws.send(json.dumps(start))
        done = asyncio.Event()
        ready = asyncio.Event()
        finished_turns = 0

        async def receive() -> None:
            nonlocal finished_turns
            async for msg in ws:
                if isinstance(msg, bytes):
                    if msg and msg[0] == p.AUDIO:
                        res.audio += msg[1:]
                    continue
                ev = json.loads(msg)
                res.events.append(ev)
                if not quiet:
                    print_event(ev)
                kind = ev.get("type")
                if kind == "ready":
                    res.session_id = ev["session_id"]
                    res.resume_secret = ev.get("resume_secret") or res.resume_secret
                    ready.set()
                elif kind == "error" and res.session_id is None:
                    raise ConnectionError(f"{ev.get('code')}: {ev.get('message')}")
                elif kind == "audio_start":
                    res.sample_rate = ev["sample_rate"]
                elif kind == "metrics" or (kind == "error" and ev.get("fatal")):
                    finished_turns += 1
                    if finished_turns >= turns:
                        done.set()

        reader = asyncio.create_task(receive())
        try:
            waiting = asyncio.ensure_future(ready.wait())
            await asyncio.wait({waiting, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if res.session_id is None:
                if reader.done():
                    reader.result()
                    raise ConnectionError("connection closed before 'ready'")
                raise TimeoutError(f"no 'ready' in {timeout:.0f}s")
            if image:
                await ws.send(bytes((p.IMAGE,)) + await asyncio.to_thread(Path(image).read_bytes))
            if text:
                await ws.send(json.dumps({"type": "text", "text": text}))
            else:
                if pcm is not None:
                    samples = pcm
                elif wav is not None:
                    samples = load_wav(wav)
                else:
                    raise ValueError("talk() needs text, pcm or wav")
                await _stream(ws, samples, done, realtime, timeout)
            await asyncio.wait_for(done.wait(), timeout)
            await asyncio.sleep(0.2)  # trailing events (state changes)
        finally:
            reader.cancel()
    return res


async def _stream(ws, samples: np.ndarray, done: asyncio.Event, realtime: bool, timeout: float) -> None:
    """Send audio in 20 ms frames at real-time pace, then silence (like an open mic) until done."""
    step = 16000 * FRAME_MS // 1000
    start = time.perf_counter()
    sent = 0
    silence = bytes((p.AUDIO,)) + bytes(step * 2)
    i = 0
    while not done.is_set() and time.perf_counter() - start < timeout:
        if i < len(samples):
            frame = samples[i : i + step]
            if len(frame) < step:
                frame = np.pad(frame, (0, step - len(frame)))
            await ws.send(bytes((p.AUDIO,)) + frame.astype("<i2").tobytes())
            i += step
        else:
            await ws.send(silence)
        sent += 1
        if realtime or i >= len(samples):
            delay = start + sent * FRAME_MS / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)


def save_wav(path: str | Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate or 16000)
        w.writeframes(pcm)


def main(args) -> int:
    if getattr(args, "mic", False):
        from jarvis.mic import main as mic_main

        return mic_main(args)
    if not (args.wav or args.text):
        print("jarvis talk: give --wav FILE, --text QUESTION or --mic", file=sys.stderr)
        return 2
    try:
        res = asyncio.run(
            talk(
                args.url,
                wav=args.wav,
                text=args.text,
                image=args.image,
                pipeline=args.pipeline,
                token=args.token,
                session_id=args.session,
                resume_secret=args.secret,
                timeout=args.timeout,
            )
        )
    except TimeoutError:
        print("jarvis talk: timed out waiting for the reply", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as exc:
        print(f"jarvis talk: {exc}", file=sys.stderr)
        return 1
    if args.out and res.audio:
        save_wav(args.out, bytes(res.audio), res.sample_rate)
        secs = len(res.audio) / 2 / (res.sample_rate or 16000)
        print(f"saved {secs:.1f}s of reply audio to {args.out}")
    print(f"session: {res.session_id}  secret: {res.resume_secret}")
    print(f"  resume with: --session {res.session_id} --secret {res.resume_secret}")
    return 0 if res.of("metrics") else 1
