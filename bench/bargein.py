"""Scenario bargein: what happens when the user talks over a spoken reply.

One session per trial. The client asks for a long spoken reply (a `text` message with
`speak: true`), waits a random 0.5-2 s into its playback (from the reply's first audio frame at
the client), then its microphone plays one sound:

* **cut**: words that should stop the reply ("Stop.", "Wait.", "No, no.", "Stop, stop. Actually
  tell me something else.");
* **backchannel**: "Mhm.", "Uh-huh.", "Yeah.", which should let it go on;
* **cough**: one or two cough-like bursts;
* **noise**: a second of pink or office-like noise.

Speech is made here with Piper's joe voice and two espeak-ng voices. The microphone streams
silence before and after the sound at real-time pace, 20 ms frames, each sent when it is
complete, as a real one does; the sound's first voiced sample has a capture time on the client's
wall clock. Per trial: the time from that sample to the `playback` `pause` event (the client
stops playing there: "audio stopping") and to `interrupted`, whether the reply was paused,
resumed or cut, and for a cut whether the next turn kept the words (its transcript begins with
the interrupting word; on the stub profile, whose STT reports how many seconds of speech it got,
whether it got all of the sound's voiced seconds).

The cutting trials run on the stub profile (the framework's own latency; the stub STT takes a
configurable time, 150 ms by default, a GPU-class STT) and a few on the CPU profile (real Whisper:
are the words kept?); the backchannel, cough and noise trials on the CPU profile, where the real
Whisper decides "words or not".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from bench.provenance import tree_commit
from bench.stats import FRAME, RATE, summarize
from shared import protocol as p

FRAME_S = FRAME / RATE
VOICES = ("joe", "espeak:en-us", "espeak:en-gb-x-rp+f3")
CUT_WORDS = ("Stop.", "Wait.", "No, no.", "Stop, stop. Actually tell me something else.")
BACKCHANNEL_WORDS = ("Mhm.", "Uh-huh.", "Yeah.")
KINDS = ("cut", "backchannel", "cough", "noise")
EXPECTED = {"cut": "cut", "backchannel": "go on", "cough": "go on", "noise": "go on"}
# long enough to still be playing after 2 s of waiting, the sound and the decision
STUB_REPLY = (
    "Here is the first sentence of a long answer. Here is the second one, a little longer than that. "
    "And a third sentence follows. Then a fourth. And finally a fifth sentence to end it."
)
CPU_REPLY = "Tell me a long story about a fox and a crow, in ten sentences."
TARGET_PAUSE_P50_MS = 300
VOICED_RMS = 0.01  # -40 dBFS over 20 ms: what the stub STT counts as voiced
ONSET_WINDOW = 80  # 5 ms
KEPT_TOLERANCE_S = 0.15  # the stub STT rounds to 0.1 s and counts frames from its own start


# ---- pure helpers (unit-tested) -----------------------------------------------------------


def onset_sample(samples: np.ndarray, level: float = VOICED_RMS, window: int = ONSET_WINDOW) -> int | None:
    """The first sample of the first 5 ms window whose RMS reaches `level` (of full scale):
    where the user started to make the sound. None for a silent clip."""
    x = samples.astype(np.float64) / 32768
    n = len(x) // window
    if not n:
        return None
    rms = np.sqrt((x[: n * window].reshape(n, window) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms >= level)
    return int(loud[0]) * window if len(loud) else None


def voiced_seconds(samples: np.ndarray, level: float = VOICED_RMS) -> float:
    """Seconds of 20 ms frames at or above `level` RMS: what the stub STT reports hearing."""
    x = samples.astype(np.float64) / 32768
    n = len(x) // FRAME
    if not n:
        return 0.0
    rms = np.sqrt((x[: n * FRAME].reshape(n, FRAME) ** 2).mean(axis=1))
    return float((rms > level).sum()) * FRAME_S


_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def stub_seconds(text: str) -> float | None:
    """The stub STT's "I spoke for two point three seconds." -> 2.3 (None for anything else)."""
    m = re.fullmatch(r"\s*i spoke for (\w+) point (\w+) seconds\.?\s*", text.lower())
    if not m or m.group(1) not in _DIGITS or m.group(2) not in _DIGITS:
        return None
    return _DIGITS.index(m.group(1)) + _DIGITS.index(m.group(2)) / 10


def words(text: str) -> list[str]:
    """Lower-case words without punctuation ("No, no." -> ["no", "no"])."""
    return [w for w in re.split(r"[^a-z']+", text.lower().replace("-", " ")) if w.strip("'")]


def words_kept(profile: str, said: str, voiced_s: float, transcript: str | None) -> bool | None:
    """Did the next turn keep the interrupting words? None when there was no next transcript.

    CPU profile: the transcript begins with the first word said. Stub profile: the transcript
    covers all the voiced seconds of the sound."""
    if transcript is None:
        return None
    if profile == "stub":
        heard = stub_seconds(transcript)
        return heard is not None and heard >= voiced_s - KEPT_TOLERANCE_S
    first, heard_words = words(said)[:1], words(transcript)
    return bool(first) and heard_words[:1] == first


@dataclass
class Outcome:
    """What the client saw after the sound began (times in ms from its first voiced sample)."""

    paused: bool = False
    pause_ms: float | None = None
    resumed: bool = False
    resume_ms: float | None = None
    cut: bool = False
    cut_ms: float | None = None
    continued: bool = False  # an `interrupted` with continued: true (should not happen here)
    pauses_before: int = 0  # `playback` pauses before the sound: nothing was said
    reply_ended: bool = False  # the reply finished playing before anything was decided


def outcome(events: list[dict], onset_t: float, turn: int) -> Outcome:
    """Read one trial's events (each with `_t`, its arrival wall time) against the sound's onset."""
    o = Outcome()
    speaking = False
    for ev in events:
        kind, t = ev.get("type"), ev.get("_t", 0.0)
        ms = (t - onset_t) * 1000
        if kind == "state":
            # LISTENING after SPEAKING and no cut: the reply played to its end
            if ev.get("state") == "LISTENING" and speaking and not o.cut:
                o.reply_ended = True
            speaking = ev.get("state") == "SPEAKING"
        elif kind == "playback" and ev.get("turn") == turn:
            if t < onset_t:
                o.pauses_before += ev.get("action") == "pause"
            elif ev.get("action") == "pause" and not o.paused:
                o.paused, o.pause_ms = True, ms
            elif ev.get("action") == "resume" and o.paused and not o.cut:
                o.resumed, o.resume_ms = True, ms
        elif kind == "interrupted" and ev.get("turn") == turn and t >= onset_t and not o.cut:
            o.cut, o.cut_ms, o.continued = True, ms, bool(ev.get("continued"))
    return o


def summarize_kind(trials: list[dict]) -> dict:
    """A table row's figures for the trials of one (profile, kind)."""
    ok = [t for t in trials if not t.get("error") and not t.get("invalid")]
    pause = [t["pause_ms"] for t in ok if t["pause_ms"] is not None]
    cut = [t["cut_ms"] for t in ok if t["cut_ms"] is not None]
    resume = [t["resume_ms"] for t in ok if t["resume_ms"] is not None]
    kept = [t["kept"] for t in ok if t["cut"]]
    return {
        "trials": len(trials),
        "valid": len(ok),
        "paused": sum(t["paused"] for t in ok),
        "pause_ms": summarize(pause, 1),
        "within_target": sum(x <= TARGET_PAUSE_P50_MS for x in pause),
        "cut": sum(t["cut"] for t in ok),
        "cut_ms": summarize(cut, 1),
        "resumed": sum(t["resumed"] for t in ok),
        "resume_ms": summarize(resume, 1),  # how long the reply stayed paused before it went on
        "kept": sum(k is True for k in kept),
        "kept_of": len(kept),
        "errors": sum(bool(t.get("error")) for t in trials),
        "invalid": sum(bool(t.get("invalid")) for t in trials),
    }


# ---- the sounds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sound:
    kind: str
    label: str  # the words said, or what the noise is
    voice: str  # a VOICES entry, or "-" for a non-speech sound
    samples: np.ndarray = field(repr=False)

    @property
    def onset(self) -> int:
        return onset_sample(self.samples) or 0

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def _sox_16k(src: Path) -> np.ndarray:
    out = src.with_suffix(".16k.wav")
    subprocess.run(["sox", str(src), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
    with wave.open(str(out), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def _trim(x: np.ndarray, level: int = 100) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) >= level)
    if not len(loud):
        raise ValueError("the synthesised clip holds no sound")
    return x[loud[0] : loud[-1] + 1].astype(np.int16)


class Speech:
    """Speech for a text in one of VOICES, 16 kHz int16 trimmed to its audible part."""

    def __init__(self) -> None:
        self._piper: Any = None

    def __call__(self, voice: str, text: str) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp, "src.wav")
            if voice == "joe":
                self._joe(text, src)
            else:
                engine, name = voice.split(":", 1)
                if engine != "espeak":
                    raise ValueError(f"unknown voice {voice!r}")
                subprocess.run(["espeak-ng", "-v", name, "-s", "160", "-w", str(src), text], check=True)
            return _trim(_sox_16k(src))

    def _joe(self, text: str, dest: Path) -> None:
        if self._piper is None:
            from piper import PiperVoice

            from services.tts.piper import packaged_voice

            model, config = packaged_voice()
            self._piper = PiperVoice.load(model, config_path=config)
        chunks = list(self._piper.synthesize(text))
        pcm = np.concatenate([np.frombuffer(c.audio_int16_bytes, dtype="<i2") for c in chunks])
        with wave.open(str(dest), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(chunks[0].sample_rate)
            w.writeframes(pcm.astype("<i2").tobytes())


def cough_burst(seed: int, coughs: int = 1, vowel: np.ndarray | None = None) -> np.ndarray:
    """Cough-like bursts at a random loudness, two of them 200-350 ms apart when asked.

    Dry (no `vowel`): a sharp attack, then 150-280 ms of decaying throat-filtered noise (Silero
    scores it well under 0.5). Voiced: a 40 ms explosive burst, then the first 120-200 ms of
    `vowel` (a voice saying "huh", "ha" or "uh") dying away fast: a cough with the voice in it,
    which Silero scores as speech (0.8-0.97), so it pauses the reply and STT must decide."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(coughs):
        if vowel is None:
            n = int(rng.uniform(0.15, 0.28) * RATE)
            k = np.arange(n)
            env = (1 - np.exp(-k / (0.004 * RATE))) * np.exp(-k / (rng.uniform(0.04, 0.08) * RATE))
            x = np.convolve(rng.standard_normal(n), np.ones(5) / 5, mode="same") * env  # throat-dull
        else:
            nb = int(0.04 * RATE)
            burst = np.convolve(rng.standard_normal(nb), np.ones(3) / 3, mode="same")
            burst *= np.exp(-np.arange(nb) / (0.012 * RATE))
            v = vowel[: int(rng.uniform(0.12, 0.2) * RATE)].astype(np.float64)
            v *= np.exp(-np.arange(len(v)) / (0.06 * RATE))
            x = np.concatenate([burst / np.abs(burst).max(), v / (np.abs(v).max() or 1.0)])
        parts.append(x / np.abs(x).max() * rng.uniform(0.3, 0.7))
        if i + 1 < coughs:
            parts.append(np.zeros(int(rng.uniform(0.2, 0.35) * RATE)))
    return (np.concatenate(parts) * 32767).astype(np.int16)


def noise_burst(kind: str, seed: int, seconds: float = 1.0, level: float = 0.08) -> np.ndarray:
    """A burst of pink noise, or office-like noise (pink floor, ventilation hum, key clicks),
    at `level` RMS of full scale, with 20 ms fades."""
    from bench.eot_corpus import pink_noise

    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = pink_noise(n, seed).astype(np.float64)
    if kind == "office":
        t = np.arange(n) / RATE
        x = 0.6 * x + 0.5 * np.sqrt(2) * np.sin(2 * np.pi * 120 * t)
        for at in rng.uniform(0, seconds, int(seconds * 5)):
            i = int(at * RATE)
            k = np.arange(min(160, n - i))
            x[i : i + len(k)] += 4 * rng.standard_normal(len(k)) * np.exp(-k / 25)
    elif kind != "pink":
        raise ValueError(f"unknown noise {kind!r}")
    x *= level / (np.sqrt(np.mean(x**2)) or 1.0)
    fade = np.linspace(0, 1, RATE // 50)
    x[: len(fade)] *= fade
    x[-len(fade) :] *= fade[::-1]
    return (x * 32767).clip(-32768, 32767).astype(np.int16)


def make_sounds(kind: str, count: int, speech: Speech, seed: int) -> list[Sound]:
    """`count` sounds of one kind, cycling over its words and voices (or noise seeds)."""
    out: list[Sound] = []
    for i in range(count):
        if kind in ("cut", "backchannel"):
            texts = CUT_WORDS if kind == "cut" else BACKCHANNEL_WORDS
            text, voice = texts[i % len(texts)], VOICES[(i // len(texts) + i) % len(VOICES)]
            out.append(Sound(kind, text, voice, speech(voice, text)))
        elif kind == "cough":
            coughs, voiced = 1 + (i // 2) % 2, i % 2 == 0
            plural = "s" * (coughs > 1)
            if voiced:
                vowel, voice = ("huh", "ha", "uh")[(i // 2) % 3], VOICES[(i // 2) % len(VOICES)]
                sound = cough_burst(seed + i, coughs, speech(voice, vowel))
                out.append(Sound(kind, f"{coughs} voiced cough{plural} ({vowel})", voice, sound))
            else:
                out.append(Sound(kind, f"{coughs} dry cough{plural}", "-", cough_burst(seed + i, coughs)))
        elif kind == "noise":
            which = ("pink", "office")[i % 2]
            level = (0.05, 0.1)[(i // 2) % 2]
            out.append(
                Sound(kind, f"{which} noise {level:g}", "-", noise_burst(which, seed + i, level=level))
            )
        else:
            raise ValueError(f"unknown kind {kind!r}")
    return out


# ---- the client -----------------------------------------------------------------------------


class Mic:
    """A microphone at real-time pace: silence unless a sound is playing. Frame j holds what is
    captured in [t0 + 20 j ms, t0 + 20 (j + 1) ms) and is sent once complete."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.j = 0  # the next frame to send
        self.clip = np.zeros(0, dtype=np.int16)
        self.clip_frame = 0
        self.late_ms: dict[int, float] = {}  # send lateness of the frames of the sound
        self._task: asyncio.Task | None = None
        self.t0_loop = 0.0
        self.t0_wall = 0.0

    def start(self) -> None:
        self.t0_loop, self.t0_wall = asyncio.get_running_loop().time(), time.time()
        self._task = asyncio.create_task(self._run())

    def play(self, samples: np.ndarray) -> float:
        """Queue `samples` from the next frame boundary on; returns the wall time at which its
        first sample is captured."""
        self.clip_frame = self.j + 1
        self.clip = samples.astype(np.int16)
        return self.t0_wall + self.clip_frame * FRAME_S

    @property
    def playing_until(self) -> float:
        """Wall time at which the sound's last frame is captured."""
        return self.t0_wall + self.clip_frame * FRAME_S + len(self.clip) / RATE

    def _frame(self, j: int) -> bytes:
        k = (j - self.clip_frame) * FRAME
        if 0 <= k < len(self.clip):
            chunk = self.clip[k : k + FRAME]
            if len(chunk) < FRAME:
                chunk = np.pad(chunk, (0, FRAME - len(chunk)))
            return bytes((p.AUDIO,)) + chunk.astype("<i2").tobytes()
        return bytes((p.AUDIO,)) + bytes(FRAME * 2)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = self.t0_loop + (self.j + 1) * FRAME_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if 0 <= self.j - self.clip_frame < len(self.clip) / FRAME:
                self.late_ms[self.j - self.clip_frame] = max(0.0, loop.time() - due) * 1000
            await self.ws.send(self._frame(self.j))
            self.j += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class TrialClient:
    """One session: events with their arrival wall time, and when reply audio first arrived."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict] = []
        self.first_audio_t: float | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):  # closed: the trial reads what arrived
            async for msg in self.ws:
                t = time.time()
                if isinstance(msg, bytes):
                    if self.first_audio_t is None:
                        self.first_audio_t = t
                else:
                    ev = json.loads(msg)
                    ev["_t"] = t
                    self.events.append(ev)
                self._changed.set()
        self._changed.set()

    def of(self, kind: str, **match) -> list[dict]:
        return [
            e for e in self.events if e.get("type") == kind and all(e.get(k) == v for k, v in match.items())
        ]

    async def until(self, check: Callable[[], object], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not check():
            left = deadline - time.monotonic()
            if left <= 0 or self._task.done():
                return bool(check())
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.05))
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.send(p.Stop().model_dump_json())
            await self.ws.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _brief(ev: dict, onset_t: float) -> dict:
    """An event as the JSON keeps it: its type, what matters of it, ms from the sound's onset."""
    keep = ("turn", "state", "action", "speaking", "text", "final", "spoken", "continued")
    out = {"type": ev.get("type"), "ms": round((ev["_t"] - onset_t) * 1000, 1)}
    out.update({k: ev[k] for k in keep if k in ev})
    return out


@dataclass(frozen=True)
class Timing:
    reply_s: float  # how long to wait for the reply's first audio
    decide_s: float  # after the sound ends: how long a decision may take
    transcript_s: float  # after a cut: how long the next turn's transcript may take


TIMINGS = {"stub": Timing(20, 3, 10), "cpu": Timing(120, 10, 40)}


async def run_trial(url: str, profile: str, sound: Sound, wait_s: float) -> dict:
    """One session: a long spoken reply, `wait_s` of it heard, then the sound."""
    timing = TIMINGS[profile]
    rec: dict = {
        "profile": profile,
        "kind": sound.kind,
        "label": sound.label,
        "voice": sound.voice,
        "sound_s": round(sound.seconds, 3),
        "voiced_s": round(voiced_seconds(sound.samples), 2),
        "wait_s": round(wait_s, 3),
    }
    ws = await connect(url, compression=None, max_size=32 << 20, ping_interval=None, open_timeout=30)
    c = TrialClient(ws)
    mic = Mic(ws)
    try:
        await ws.send(p.Start(pipeline="sts").model_dump_json())
        if not await c.until(lambda: c.of("state", state="LISTENING"), 120):
            raise TimeoutError("the session never got to LISTENING")
        mic.start()
        await ws.send(
            p.Text(text=STUB_REPLY if profile == "stub" else CPU_REPLY, speak=True).model_dump_json()
        )
        if not await c.until(lambda: c.first_audio_t and c.of("state", state="SPEAKING"), timing.reply_s):
            raise TimeoutError("no spoken reply")
        turn = int(next((e["turn"] for e in c.events if e.get("type") == "audio_start"), 0) or 0)
        rec["reply_turn"] = turn
        assert c.first_audio_t is not None
        await asyncio.sleep(max(0.0, c.first_audio_t + wait_s - time.time()))
        start_t = mic.play(sound.samples)
        onset_t = start_t + sound.onset / RATE
        rec["waited_s"] = round(onset_t - c.first_audio_t, 3)
        heard_end = mic.playing_until + timing.decide_s

        def decided() -> bool:
            o = outcome(c.events, onset_t, turn)
            if o.cut or o.reply_ended:
                return True
            # a resume (or no pause at all) once the sound is over and the stack had time to judge
            return time.time() > mic.playing_until + 0.6 and (o.resumed or not o.paused)

        await c.until(lambda: decided() or time.time() > heard_end, heard_end - time.time() + 1)
        await asyncio.sleep(0.5)  # a late `interrupted` after a resume would count
        o = outcome(c.events, onset_t, turn)
        transcript = None
        if o.cut and not o.continued:
            # the next turn's transcript once the user is done: a turn begun at a gap inside the
            # sound ("Stop, | stop ...") is continued by the rest, and transcribed again, whole
            nxt = turn + 1

            def settled() -> bool:
                if time.time() < mic.playing_until + 0.3:
                    return False
                vad = c.of("vad")
                if vad and vad[-1].get("speaking"):
                    return False  # still talking
                done = vad[-1]["_t"] if vad else 0.0
                return any(e["_t"] >= done for e in c.of("transcript", final=True, turn=nxt))

            await c.until(settled, timing.transcript_s + sound.seconds)
            finals = c.of("transcript", final=True, turn=nxt)
            transcript = finals[-1]["text"] if finals else None
            rec["next_turn_transcripts"] = len(finals)
            rec["later_turns"] = [
                e["text"] for e in c.of("transcript", final=True) if int(e.get("turn") or 0) > nxt
            ]
        rec.update(asdict(o))
        rec["transcript"] = transcript
        rec["kept"] = words_kept(profile, sound.label, rec["voiced_s"], transcript) if o.cut else None
        rec["events"] = [_brief(e, onset_t) for e in c.events if e["_t"] >= c.first_audio_t]
        rec["mic_late_ms_max"] = round(max(mic.late_ms.values(), default=0.0), 1)
        if outcome([e for e in c.events if e["_t"] < onset_t], onset_t, turn).reply_ended:
            rec["invalid"] = "the reply ended before the sound began"
        errors = c.of("error")
        if errors:
            rec["server_errors"] = [f"{e.get('code')}: {e.get('message')}" for e in errors]
    finally:
        await mic.stop()
        await c.close()
    return rec


# ---- the scenario ---------------------------------------------------------------------------


@dataclass
class Plan:
    """Trials per (profile, kind)."""

    stub: dict[str, int]
    cpu: dict[str, int]


def default_plan(trials: int) -> Plan:
    return Plan(
        stub={"cut": trials},
        cpu={"cut": max(2, trials // 2), "backchannel": trials, "cough": trials, "noise": trials},
    )


def _run_profile(
    profile: str, sounds: list[Sound], opts, rng: random.Random, stub_stt_delay: float, log
) -> dict:
    from bench.monitor import renice, set_realtime, stack_pids
    from bench.scenarios import _Workdir
    from jarvis.launcher import Stack
    from jarvis.redis_server import free_port

    wd = _Workdir(opts, f"bargein-{profile}")
    stack = Stack(
        profile=profile,
        port=free_port(),
        workdir=wd.path,
        orchestrators=1,
        stub_stt_delay=stub_stt_delay if profile == "stub" else 0.0,
    )
    out: dict = {"profile": profile, "trials": []}
    rt = opts.realtime if opts.realtime is not None and "bargein" in opts.realtime_scenarios else None
    try:
        t = time.monotonic()
        stack.start(timeout=opts.cpu_start_timeout if profile == "cpu" else opts.start_timeout)
        out["stack_start_s"] = round(time.monotonic() - t, 1)
        if opts.priority is not None:
            out["priority_failed"] = renice(stack_pids(stack), opts.priority)
        if rt is not None:
            out["realtime"] = rt
            out["realtime_failed"] = set_realtime(stack_pids(stack), rt)

        async def all_trials() -> None:
            for i, s in enumerate(sounds):
                wait = rng.uniform(0.5, 2.0)
                try:
                    rec = await run_trial(stack.url, profile, s, wait)
                except Exception as exc:  # noqa: BLE001 - one broken trial never loses the others
                    rec = {"profile": profile, "kind": s.kind, "label": s.label, "voice": s.voice}
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                out["trials"].append(rec)
                log(f"  bargein {profile} {i + 1}/{len(sounds)}: {_trial_line(rec)}")

        from bench.scenarios import run_async

        run_async(all_trials())
    finally:
        if rt is not None:
            set_realtime({"bench": os.getpid()}, None)
        out["logs"] = wd.logs_tail()
        stack.stop()
        wd.close()
    return out


def _trial_line(r: dict) -> str:
    if r.get("error"):
        return f"{r['kind']} {r['label']!r} ({r['voice']}): ERROR {r['error']}"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    what = "cut" if r["cut"] else "resumed" if r["resumed"] else "paused" if r["paused"] else "no pause"
    kept = "" if r["kept"] is None else f", kept={r['kept']} ({r['transcript']!r})"
    if r["cut"] and r["transcript"] is None:
        kept = ", no next transcript"
    return (
        f"{r['kind']} {r['label']!r} ({r['voice']}) after {r['waited_s']:.2f} s: {what}; "
        f"pause {ms(r['pause_ms'])}, cut {ms(r['cut_ms'])}{kept}"
        + (f" [{r['invalid']}]" if r.get("invalid") else "")
    )


def scenario_bargein(
    opts,
    out_dir: Path,
    trials: int = 10,
    stub_stt_delay: float = 0.15,
    profiles: tuple[str, ...] = ("stub", "cpu"),
    log=print,
) -> dict:
    from bench.scenarios import _cpu_profile_missing
    from services.orchestrator.config import EndpointSettings

    t0 = time.monotonic()
    rng = random.Random(opts.seed)
    plan = default_plan(trials)
    speech = Speech()
    res: dict = {
        "scenario": "bargein",
        "commit": tree_commit(),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "stub_stt_delay_s": stub_stt_delay,
        "target_pause_p50_ms": TARGET_PAUSE_P50_MS,
        "endpoint": EndpointSettings().model_dump(),
        "profiles": {},
    }
    for profile in profiles:
        kinds = getattr(plan, profile)
        if profile == "cpu" and (missing := _cpu_profile_missing()):
            res["profiles"][profile] = {"error": f"the CPU profile is not installed ({missing})"}
            continue
        sounds = [s for kind, n in kinds.items() for s in make_sounds(kind, n, speech, opts.seed)]
        rng.shuffle(sounds)
        log(
            f"  bargein: {profile} profile, {len(sounds)} trials "
            f"({', '.join(f'{k} {n}' for k, n in kinds.items())})"
        )
        try:
            r = _run_profile(profile, sounds, opts, rng, stub_stt_delay, log)
        except Exception as exc:  # noqa: BLE001 - the other profile's figures still count
            res["profiles"][profile] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        r["kinds"] = {k: summarize_kind([t for t in r["trials"] if t["kind"] == k]) for k in kinds}
        res["profiles"][profile] = r
    res["elapsed_s"] = round(time.monotonic() - t0, 1)
    return res


def render_bargein(r: dict) -> str:
    from bench.report import table

    if "error" in r:
        return f"bargein) ERROR: {r['error']}"
    rows = []
    for profile, pr in r["profiles"].items():
        if "error" in pr:
            rows.append([profile, pr["error"], *[None] * 10])
            continue
        for kind, k in pr["kinds"].items():
            rows.append(
                [
                    f"{profile} / {kind}",
                    k["valid"],
                    f"{k['paused']}",
                    k["pause_ms"]["p50"],
                    k["pause_ms"]["p95"],
                    f"{k['within_target']}/{k['pause_ms']['n']}",
                    k["cut"],
                    k["cut_ms"]["p50"],
                    k["resumed"],
                    k["resume_ms"]["p50"],
                    f"{k['kept']}/{k['kept_of']}" if k["kept_of"] else "-",
                    EXPECTED[kind],
                ]
            )
    out = [
        table(
            [
                "profile / kind",
                "trials",
                "paused",
                "pause p50",
                "p95",
                "<=300",
                "cut",
                "cut p50",
                "resumed",
                "resume p50",
                "words kept",
                "should",
            ],
            rows,
            f"bargein) talking over a reply (ms from the sound's first voiced sample; commit {r['commit']}; "
            f"stub STT {r['stub_stt_delay_s'] * 1000:.0f} ms)",
        )
    ]
    for profile, pr in r["profiles"].items():
        for t in pr.get("trials", []):
            bad = t.get("error") or t.get("invalid") or t.get("server_errors")
            wrong = not t.get("error") and t.get("cut") != (EXPECTED[t["kind"]] == "cut")
            if bad or wrong or t.get("kept") is False:
                out.append(f"  {profile}: {_trial_line(t)}")
        for name, text in (pr.get("logs") or {}).items():
            out.append(f"  --- {profile} {name}\n{text}")
    return "\n".join(out)
