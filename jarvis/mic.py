"""`jarvis talk --mic`: a live conversation through this machine's microphone and speakers.

The microphone is streamed as 20 ms PCM16 frames at 16 kHz (resampled when the device can't
open at 16 kHz); reply audio is played as it arrives and dropped at once on `interrupted`
or when a new reply starts. Events are printed like `jarvis talk` prints them.

Hands-free by default (the server's VAD ends turns). Without echo cancellation the speakers
would reach the microphone and Jarvis would interrupt itself, so by default the microphone is
muted (silence is sent) while a reply plays; with headphones, `duplex=True` keeps it open so
you can interrupt by speaking. `ptt=True`: push to talk, Enter starts and ends each turn.

Needs the `sounddevice` package (PortAudio); without it, or without a sound device, it says
so and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

import numpy as np

from shared import protocol as p

RATE = 16000
FRAME = RATE // 50  # 20 ms

NO_SOUNDDEVICE = (
    "jarvis talk --mic needs the 'sounddevice' package and the PortAudio library:\n"
    "  .venv/bin/pip install sounddevice   (and on Debian/Ubuntu: apt-get install libportaudio2)\n"
    "Without a microphone, use --wav FILE or --text QUESTION."
)


class Resampler:
    """Streaming linear resampler for int16 mono blocks (for devices that won't open at the rate we need)."""

    def __init__(self, src: int, dst: int) -> None:
        self.step = src / dst
        self.t = 0.0  # position of the next output sample, in input samples from the current block's start
        self.prev = 0.0  # the previous block's last sample (position -1)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self.step == 1 or not len(block):
            return block
        x = np.concatenate(([self.prev], block.astype(np.float32)))  # x[0] is position -1
        n = len(block)
        positions = np.arange(self.t, n - 1 + 1e-9, self.step)
        out = np.interp(positions + 1, np.arange(n + 1), x)
        self.t = (positions[-1] + self.step - n) if len(positions) else self.t - n
        self.prev = float(block[-1])
        return out.clip(-32768, 32767).astype("<i2")


class Speaker:
    """Reply audio: a byte queue drained by the output device's callback; `flush()` silences it now."""

    def __init__(self, sd: Any) -> None:
        self.sd = sd
        self.lock = threading.Lock()
        self.buf = bytearray()
        self.stream = None
        self.rate = 0
        self.resample: Resampler | None = None
        self.accepting = False
        self.paused = False  # the user talks over the reply: hold it (audio keeps queueing)

    def begin(self, rate: int) -> None:
        self.flush()
        if rate != self.rate or self.stream is None:
            self.close()
            device_rate = rate
            try:
                self.sd.check_output_settings(samplerate=rate, channels=1, dtype="int16")
            except Exception:  # noqa: BLE001 - this device can't play that rate: resample to its own
                device_rate = int(self.sd.query_devices(kind="output")["default_samplerate"])
            self.resample = Resampler(rate, device_rate) if device_rate != rate else None
            stream = self.sd.RawOutputStream(
                samplerate=device_rate, channels=1, dtype="int16", callback=self._callback, latency="low"
            )
            stream.start()
            self.stream = stream
            self.rate = rate
        self.accepting = True

    def feed(self, pcm: bytes) -> None:
        if not self.accepting:
            return
        if self.resample is not None:
            pcm = self.resample(np.frombuffer(pcm, dtype="<i2")).tobytes()
        with self.lock:
            self.buf += pcm

    def flush(self) -> None:
        self.accepting = False
        self.paused = False
        with self.lock:
            self.buf.clear()

    @property
    def playing(self) -> bool:
        return bool(self.buf)

    def _callback(self, outdata, frames, _time, _status) -> None:
        n = frames * 2
        with self.lock:
            if self.paused:
                chunk = b""
            else:
                chunk = bytes(self.buf[:n])
                del self.buf[:n]
        outdata[: len(chunk)] = chunk
        if len(chunk) < n:
            outdata[len(chunk) :] = b"\x00" * (n - len(chunk))

    def close(self) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()
            self.stream = None


async def run(
    url: str,
    *,
    sd: Any,
    token: str | None = None,
    pipeline: str = "sts",
    session_id: str | None = None,
    resume_secret: str | None = None,
    duplex: bool = False,
    ptt: bool = False,
    device: int | str | None = None,
    status: dict[str, Any] | None = None,
) -> str | None:
    """Talk until Ctrl-C or the connection ends; returns the session id (to resume with --session).
    `status["id"]` holds the session id as soon as the server names it (also after a Ctrl-C)."""
    from websockets.asyncio.client import connect

    from jarvis.events import print_event

    loop = asyncio.get_running_loop()
    frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=500)
    speaker = Speaker(sd)
    session: dict[str, Any] = status if status is not None else {}
    session["id"] = session_id
    session.setdefault("secret", resume_secret)

    try:
        sd.check_input_settings(device=device, samplerate=RATE, channels=1, dtype="int16")
        in_rate = RATE
    except Exception:  # noqa: BLE001 - open at the device's own rate and resample
        info = sd.query_devices(device) if device is not None else sd.query_devices(kind="input")
        in_rate = int(info["default_samplerate"])
    to_16k = Resampler(in_rate, RATE)

    def put(pcm: bytes) -> None:
        if not frames.full():  # the socket is stuck: drop audio rather than fall behind
            frames.put_nowait(pcm)

    def on_input(indata, _frames, _time, _status) -> None:  # PortAudio's thread
        pcm = bytes(indata)
        if not duplex and speaker.playing:
            pcm = bytes(len(pcm))  # half duplex: don't let the speakers barge in
        try:
            loop.call_soon_threadsafe(put, pcm)
        except RuntimeError:  # the loop is closing
            pass

    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(url, additional_headers=headers, compression=None, max_size=16 << 20) as ws:
        start = {"type": "start", "pipeline": pipeline, "sample_rate": RATE}
        if session_id:
            start.update(session_id=session_id, resume_secret=resume_secret)
        if ptt:
            start["trigger"] = p.Trigger.MANUAL.value
        await ws.send(json.dumps(start))

        async def receive() -> None:
            async for msg in ws:
                if isinstance(msg, bytes):
                    if msg[:1] == bytes((p.AUDIO,)):
                        speaker.feed(msg[1:])
                    continue
                ev = json.loads(msg)
                kind = ev.get("type")
                if kind == "ready":
                    session["id"] = ev["session_id"]
                    session["secret"] = ev.get("resume_secret") or session.get("secret")
                elif kind == "audio_start":
                    speaker.begin(ev["sample_rate"])
                elif kind == "interrupted":
                    speaker.flush()
                elif kind == "playback":
                    speaker.paused = ev.get("action") == "pause"
                if kind not in ("reply", "vad") or ev.get("final"):
                    print_event(ev)

        async def send_audio() -> None:
            pending = bytearray()
            while True:
                pcm = await frames.get()
                if in_rate != RATE:
                    pcm = to_16k(np.frombuffer(pcm, dtype="<i2")).tobytes()
                pending += pcm
                while len(pending) >= FRAME * 2:
                    frame = bytes(pending[: FRAME * 2])
                    del pending[: FRAME * 2]
                    await ws.send(bytes((p.AUDIO,)) + frame)

        async def push_to_talk() -> None:
            talking = False
            print("[mic] push to talk: press Enter to start speaking, Enter again to send", flush=True)
            while True:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line:
                    return
                talking = not talking
                if talking:
                    speaker.flush()
                await ws.send(json.dumps({"type": "turn", "action": "begin" if talking else "end"}))
                print("[mic] ● recording… (Enter to send)" if talking else "[mic] sent", flush=True)

        block = FRAME * in_rate // RATE
        with sd.RawInputStream(
            device=device,
            samplerate=in_rate,
            channels=1,
            dtype="int16",
            blocksize=block,
            callback=on_input,
            latency="low",
        ) as stream:
            try:
                name = sd.query_devices(stream.device)["name"]
            except Exception:  # noqa: BLE001 - only for the banner
                name = "microphone"
            mode = "push to talk" if ptt else "hands-free"
            echo = (
                "duplex: speak over the reply to interrupt"
                if duplex
                else "the mic is muted while Jarvis speaks"
            )
            print(f"[mic] {name} at {in_rate} Hz, {mode}, {echo}. Ctrl-C to stop.", flush=True)
            tasks = [asyncio.create_task(receive()), asyncio.create_task(send_audio())]
            if ptt:
                tasks.append(asyncio.create_task(push_to_talk()))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
            finally:
                for t in tasks:
                    t.cancel()
                speaker.close()
    return session["id"]


def main(args) -> int:
    """Entry point for `jarvis talk --mic` (uses args.url, args.token, args.pipeline, args.session)."""
    try:
        import sounddevice as sd
    except ImportError:
        print(NO_SOUNDDEVICE, file=sys.stderr)
        return 2
    except OSError as exc:  # the package is there but PortAudio is not
        print(f"{NO_SOUNDDEVICE}\n({exc})", file=sys.stderr)
        return 2
    try:
        sd.query_devices(kind="input")
    except Exception as exc:  # noqa: BLE001 - PortAudioError or ValueError: no input device
        print(
            f"jarvis talk --mic: no usable microphone ({exc}). Use --wav FILE or --text QUESTION.",
            file=sys.stderr,
        )
        return 1
    status: dict[str, Any] = {"id": getattr(args, "session", None), "secret": getattr(args, "secret", None)}
    try:
        asyncio.run(
            run(
                args.url,
                sd=sd,
                token=getattr(args, "token", None),
                pipeline=getattr(args, "pipeline", None) or "sts",
                session_id=status["id"],
                resume_secret=status["secret"],
                duplex=bool(getattr(args, "duplex", False)),
                ptt=bool(getattr(args, "ptt", False)),
                device=getattr(args, "device", None),
                status=status,
            )
        )
    except KeyboardInterrupt:
        pass
    except sd.PortAudioError as exc:
        print(f"jarvis talk --mic: the sound device failed: {exc}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as exc:
        print(f"jarvis talk --mic: {exc}", file=sys.stderr)
        return 1
    if status.get("id"):
        print(f"\nsession: {status['id']}  secret: {status.get('secret')}")
        print(f"  resume with: --session {status['id']} --secret {status.get('secret')}")
    return 0
