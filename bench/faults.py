"""`python -m bench --scenario faults`: a fault campaign. A stub stack with realistic model
delays (two orchestrators, supervised as `jarvis up` does) serves a few sessions that keep
asking questions; meanwhile a process is killed with SIGKILL every few seconds, round robin
over every kind (STT, LLM, TTS worker, the owning orchestrator, the gateway, Redis). Each turn
ends completed (metrics), with a clear error, or lost (neither within the turn timeout); a turn
is charged to the kill that landed while it was in flight. At the end every session's history
is checked: each completed question once, with all its words."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from jarvis.launcher import Stack
from jarvis.redis_server import free_port
from shared import redis_url
from shared.messages import owner_key

KINDS = ("stt", "llm", "tts", "owner", "gateway", "redis")
TURN_TIMEOUT_S = 20.0
FRAME = 320  # 20 ms at 16 kHz


def fault_stack(workdir: Path) -> Stack:
    return Stack(
        profile="stub",
        port=free_port(),
        workdir=workdir,
        orchestrators=2,
        stub_llm_delay=0.06,
        stub_stt_delay=0.5,
        stub_tts_delay=0.03,
        env={"JARVIS_LEASE_MS": "1500"},
    )


@dataclass
class TurnOutcome:
    session: int
    turn: int
    asked: float
    ended: float | None = None
    outcome: str = "lost"  # completed, error, lost
    transcript: str = ""
    kills: list[str] = field(default_factory=list)


class Speaker:
    """One session: an open microphone (silence between questions) that asks `question` again
    and again; reconnects and resumes (secret, last event id) when its connection drops."""

    def __init__(self, url: str, index: int, question: np.ndarray) -> None:
        self.url = url
        self.index = index
        self.question = question
        self.ws: ClientConnection | None = None
        self.sid: str | None = None
        self.secret: str | None = None
        self.last_id: str | None = None
        self.events: list[dict] = []
        self.seen: set[str] = set()
        self.turns: list[TurnOutcome] = []
        self._speech = np.zeros(0, dtype="<i2")
        self._changed = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def connect(self) -> None:
        start: dict = {"type": "start"}
        if self.sid:
            start.update(session_id=self.sid, resume_secret=self.secret)
            if self.last_id:
                start["last_event_id"] = self.last_id
        ws = await connect(self.url, compression=None, max_size=32 << 20, open_timeout=5)
        await ws.send(json.dumps(start))
        self.ws = ws
        self._reader = asyncio.create_task(self._read(ws))
        await self.wait(lambda e: e["type"] == "ready", 10)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    continue
                ev = json.loads(msg)
                eid = ev.get("id")
                if eid in self.seen:
                    continue
                if eid:
                    self.seen.add(eid)
                    self.last_id = eid
                if ev["type"] == "ready":
                    self.sid = ev["session_id"]
                    self.secret = ev.get("resume_secret") or self.secret
                ev["_t"] = time.monotonic()
                self.events.append(ev)
                self._changed.set()
        except Exception:  # noqa: BLE001 - the connection dropped; the mic reconnects
            pass

    async def wait(self, match, timeout: float, since: int = 0) -> dict | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events[since:]:
                if match(e):
                    return e
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.01, end - time.monotonic()))
            except TimeoutError:
                pass
        return None

    async def mic(self) -> None:
        quiet = bytes((1,)) + bytes(FRAME * 2)
        t0, n = time.perf_counter(), 0
        while True:
            if len(self._speech):
                chunk, self._speech = self._speech[:FRAME], self._speech[FRAME:]
                frame = bytes((1,)) + np.pad(chunk, (0, FRAME - len(chunk))).astype("<i2").tobytes()
            else:
                frame = quiet
            try:
                assert self.ws is not None
                await self.ws.send(frame)
            except Exception:  # noqa: BLE001 - the gateway died: resume on the new one
                await self._reconnect()
                t0, n = time.perf_counter(), 0
                continue
            n += 1
            delay = t0 + n * 0.02 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _reconnect(self) -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                await self.connect()
                return
            except Exception:  # noqa: BLE001 - not listening yet
                await asyncio.sleep(0.1)

    async def converse(self, stop: asyncio.Event, pause_s: float = 0.5) -> None:
        """Ask, wait for the turn's metrics or an error (or give up: lost), pause, ask again."""
        while not stop.is_set():
            mark = len(self.events)
            out = TurnOutcome(self.index, len(self.turns) + 1, time.monotonic())
            self.turns.append(out)
            self._speech = np.concatenate([np.zeros(4800, "<i2"), self.question, np.zeros(1600, "<i2")])

            def done(e: dict) -> bool:
                return e["type"] == "metrics" or (e["type"] == "error" and e.get("code") == "model_error")

            ev = await self.wait(done, TURN_TIMEOUT_S, since=mark)
            if ev is not None:
                out.ended = ev["_t"]
                out.outcome = "completed" if ev["type"] == "metrics" else "error"
                if ev["type"] == "metrics":
                    out.turn = ev["turn"]
            await asyncio.sleep(pause_s + random.random())


async def _campaign(
    stack: Stack, sessions: int, kills: int, every_s: float, question: np.ndarray, want_s: float
) -> dict:

    speakers = [Speaker(stack.url, i, question) for i in range(sessions)]
    for s in speakers:
        await s.connect()
        await s.wait(lambda e: e["type"] == "state" and e.get("state") == "LISTENING", 10)
    mics = [asyncio.create_task(s.mic()) for s in speakers]
    stop = asyncio.Event()
    talks = [asyncio.create_task(s.converse(stop)) for s in speakers]
    log: list[tuple[float, str]] = []
    r = redis_url.sync_client(stack.redis_url, socket_timeout=2)
    try:
        await asyncio.sleep(3)
        for i in range(kills):
            kind = KINDS[i % len(KINDS)]
            pid = _pid(stack, r, kind, random.choice(speakers).sid)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    log.append((time.monotonic(), kind))
                except ProcessLookupError:
                    pass
            await asyncio.sleep(every_s * (0.7 + 0.6 * random.random()))
            if i % 10 == 9:
                print(f"faults: {i + 1}/{kills} kills", flush=True)
        await asyncio.sleep(TURN_TIMEOUT_S / 2)
    finally:
        stop.set()
        await asyncio.wait(talks, timeout=TURN_TIMEOUT_S + 5)
        for t in mics + talks:
            t.cancel()
        await asyncio.gather(*mics, *talks, return_exceptions=True)
        for s in speakers:
            if s.ws is not None:
                await s.ws.close()
        r.close()
    return _report(stack, speakers, log, want_s)


def _pid(stack: Stack, r, kind: str, sid: str | None) -> int | None:
    if kind == "redis":
        return stack.redis.pid if stack.redis else None
    if kind == "owner":
        try:
            owner = r.get(owner_key(sid))
        except Exception:  # noqa: BLE001 - Redis restarting
            return None
        return int(owner.decode().split("-")[-2]) if owner else None
    proc = next((p for p in stack.procs if p.name == kind), None)
    return proc.pid if proc is not None and proc.alive() else None


def _report(stack: Stack, speakers: list[Speaker], kills: list[tuple[float, str]], want: float) -> dict:
    rows: dict[str, Counter] = defaultdict(Counter)
    for _at, kind in kills:
        rows[kind]["kills"] += 1
    turns = [t for s in speakers for t in s.turns if t.ended is not None or t.outcome == "lost"]
    for t in turns:
        end = t.ended if t.ended is not None else t.asked + TURN_TIMEOUT_S
        t.kills = [kind for at, kind in kills if t.asked <= at <= end]
        for kind in set(t.kills) or {"none"}:
            rows[kind]["turns"] += 1
            rows[kind][t.outcome] += 1
    histories = {}
    twice = short = 0
    for s in speakers:
        path = stack.workdir / "sessions" / f"{s.sid}.json"
        hist = json.loads(path.read_text())["history"] if path.exists() else []
        numbers = [h["turn"] for h in hist]
        twice += len(numbers) - len(set(numbers))
        # a question whose words were cut (a fragment answered) is shorter than the question
        short += sum(1 for h in hist if h["user"] and _seconds(h["user"]) < want - 0.15)
        histories[s.index] = len(hist)
    totals = Counter(t.outcome for t in turns)
    t0 = min((t.asked for t in turns), default=0.0)
    return {
        "scenario": "faults",
        "kills": len(kills),
        "kinds": {k: dict(rows[k]) for k in (*KINDS, "none") if k in rows},
        "turns": len(turns),
        "completed": totals["completed"],
        "clear_error": totals["error"],
        "lost": totals["lost"],
        "history_turns": histories,
        "history_turns_twice": twice,
        "history_questions_cut": short,
        "given_up": list(stack.given_up),
        "recovery_s": _recovery(turns),
        "turn_log": [
            {
                "session": t.session,
                "asked_s": round(t.asked - t0, 2),
                "took_s": None if t.ended is None else round(t.ended - t.asked, 2),
                "outcome": t.outcome,
                "kills": t.kills,
            }
            for t in turns
        ],
        "kill_log": [(round(at - t0, 2), kind) for at, kind in kills],
    }


async def _heard(samples: np.ndarray) -> str:
    """What the stub STT says for the whole question."""
    from services.stt.stub import StubStt
    from shared.model import SttRequest

    async for t in StubStt().infer(SttRequest(samples.astype("<i2").tobytes(), 16000)):
        return t.text
    return ""


_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _seconds(transcript: str) -> float:
    """The stub STT's "I spoke for two point one seconds" as seconds (0 if it says otherwise)."""
    words = transcript.split()
    try:
        i = words.index("point")
        return _DIGITS.index(words[i - 1]) + _DIGITS.index(words[i + 1]) / 10
    except (ValueError, IndexError):
        return 0.0


def _recovery(turns: list[TurnOutcome]) -> dict:
    hit = sorted(t.ended - t.asked for t in turns if t.kills and t.ended is not None)
    clean = sorted(t.ended - t.asked for t in turns if not t.kills and t.ended is not None)

    def pct(xs: list[float], q: float) -> float | None:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else None

    return {
        "hit_p50": pct(hit, 0.5),
        "hit_p95": pct(hit, 0.95),
        "hit_max": pct(hit, 1.0),
        "clean_p50": pct(clean, 0.5),
    }


def scenario_faults(question: np.ndarray, kills: int = 102, sessions: int = 4, every_s: float = 3.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="jarvis-faults-") as tmp:
        stack = fault_stack(Path(tmp))
        stack.start(timeout=180)
        stack.watch()
        try:
            started = time.monotonic()
            want = _seconds(asyncio.run(_heard(question)))
            res = asyncio.run(_campaign(stack, sessions, kills, every_s, question, want))
            res["elapsed_s"] = round(time.monotonic() - started, 1)
            res["sessions"] = sessions
            return res
        finally:
            stack.stop()


def render(res: dict) -> str:
    if "error" in res:
        return f"faults: ERROR {res['error']}"
    lines = [
        f"faults: {res['kills']} kills over {res.get('elapsed_s')} s, {res['sessions']} sessions talking",
        f"  {'killed':<9}{'kills':>6}{'turns hit':>11}{'completed':>11}{'error':>7}{'lost':>6}",
    ]
    for kind, row in res["kinds"].items():
        lines.append(
            f"  {kind:<9}{row.get('kills', 0):>6}{row.get('turns', 0):>11}{row.get('completed', 0):>11}"
            f"{row.get('error', 0):>7}{row.get('lost', 0):>6}"
        )
    rec = res["recovery_s"]
    lines.append(
        f"  all turns: {res['turns']} ({res['completed']} completed, {res['clear_error']} clear error, "
        f"{res['lost']} lost); in the histories: {res['history_turns_twice']} turns twice, "
        f"{res['history_questions_cut']} questions cut short"
    )
    lines.append(
        f"  turn time (ask to answer, s): hit by a kill p50 {rec['hit_p50']} p95 {rec['hit_p95']} "
        f"max {rec['hit_max']}; not hit p50 {rec['clean_p50']}"
    )
    return "\n".join(lines)
