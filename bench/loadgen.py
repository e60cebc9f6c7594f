"""The load generator: N WebSocket clients that talk to the gateway like microphones.

Each client connects (compression off, as the gateway and any audio client should), sends
`start`, waits for LISTENING, and once every client is ready they all stream 20 ms frames of
16 kHz PCM16 at real-time pace, each with a random phase (a random offset inside the 20 ms
frame period and a random lead-in of silence up to one turn long, so turns do not line up
across clients). A turn is the spoken question followed by `gap_s` of silence. The client
stamps every frame's send time and every event's and reply audio frame's arrival
(wall clock, `time.time()`, the same clock Redis stream ids use), so that after the run
`analyze` can compute each turn's figures against the offline replay of its VAD
(`bench.audio.offline_decisions`).

With `wait_reply` (the real-model scenario) a client holds the next question back, streaming
silence, until the previous reply has finished playing (state back to LISTENING), as a
person would; the extra silence is recorded in the plan so the replay stays exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect

from bench.audio import Clip, Decision, Plan
from bench.stats import FRAME, RATE, framework_ms, last_speech_frame, overhead_ms

AUDIO_TAG = 0x01
FRAME_S = FRAME / RATE  # 0.02


def _id_ms(ev: dict) -> int | None:
    eid = ev.get("id")
    if not eid:
        return None
    try:
        return int(str(eid).split("-", 1)[0])
    except ValueError:
        return None


@dataclass
class LoadClient:
    idx: int
    plan: Plan
    ws: ClientConnection | None = None
    sent: list[float] = field(default_factory=list)  # wall time each frame was handed to the socket
    late: list[float] = field(default_factory=list)  # send time - scheduled time, seconds (pacing)
    events: list[dict] = field(default_factory=list)  # with "_t": arrival wall time
    first_audio: list[tuple[float, int, int]] = field(default_factory=list)  # (t, turn, len(events) then)
    audio_bytes: int = 0
    error: str | None = None
    state: str | None = None
    metrics_seen: int = 0
    _await_audio: int | None = None
    _reader: asyncio.Task | None = None
    _listening: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sid(self) -> str | None:
        return next((e.get("session_id") for e in self.events if e.get("type") == "ready"), None)

    async def open(self, url: str, timeout: float) -> None:
        self.ws = await connect(
            url, compression=None, max_size=32 << 20, open_timeout=timeout, ping_interval=None
        )
        self._reader = asyncio.create_task(self._read())
        await self.ws.send(json.dumps({"type": "start", "pipeline": "sts"}))
        await asyncio.wait_for(self._listening.wait(), timeout)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                t = time.time()
                if isinstance(msg, bytes):
                    if self._await_audio is not None:
                        self.first_audio.append((t, self._await_audio, len(self.events)))
                        self._await_audio = None
                    self.audio_bytes += len(msg) - 1
                    continue
                ev = json.loads(msg)
                ev["_t"] = t
                self.events.append(ev)
                kind = ev.get("type")
                if kind == "audio_start":
                    self._await_audio = ev.get("turn")
                elif kind == "state":
                    self.state = ev.get("state")
                    if self.state == "LISTENING":
                        self._listening.set()
                elif kind == "metrics":
                    self.metrics_seen += 1
                elif kind == "error":
                    self.error = f"{ev.get('code')}: {ev.get('message')}"
                self._changed.set()
        except Exception as exc:  # noqa: BLE001 - closed or broken: recorded, never raised
            if self.error is None and not isinstance(exc, asyncio.CancelledError):
                self.error = f"reader: {type(exc).__name__}: {exc}"
        finally:
            self._changed.set()

    def _reply_done(self, k: int) -> bool:
        """Turn k's reply has ended and played out: k+1 metrics seen and LISTENING again."""
        return self.metrics_seen >= k + 1 and self.state == "LISTENING"

    async def stream(
        self,
        t0_loop: float,
        clip_frames: list[bytes],
        wait_reply: bool,
        max_wait_s: float,
        tail_until=None,
        max_tail_s: float = 6.0,
    ) -> None:
        """Play the plan at real-time pace; frame j is due at loop time t0_loop + j * 20 ms."""
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        silence = bytes((AUDIO_TAG,)) + bytes(FRAME * 2)
        plan = self.plan
        j = 0
        send = self.ws.send
        sent = self.sent
        late = self.late

        async def one(frame: bytes) -> None:
            nonlocal j
            due = t0_loop + j * FRAME_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            # stamped just before the write: the frame reaches the kernel inside send(), but the
            # task may resume after it only later (another client's turn), so "after" would be late
            sent.append(time.time())
            late.append(max(0.0, loop.time() - due))  # uvloop may wake up to ~1 ms early
            await send(frame)
            j += 1

        for _ in range(plan.lead_in):
            await one(silence)
        for k in range(plan.turns):
            for frame in clip_frames:
                await one(frame)
            for _ in range(plan.gap):
                await one(silence)
            if wait_reply:
                waited = 0
                limit = int(max_wait_s / FRAME_S)
                while not self._reply_done(k) and waited < limit:
                    await one(silence)
                    waited += 1
                plan.extra[k] = waited
        # keep the microphone open until the last reply has arrived (or a time limit)
        limit = int(max_tail_s / FRAME_S)
        while plan.tail < limit and not (tail_until is None or tail_until(self)):
            await one(silence)
            plan.tail += 1

    async def close(self) -> None:
        if self.ws is None:
            return
        with contextlib.suppress(Exception):  # already closed: nothing to stop
            await self.ws.send(json.dumps({"type": "stop"}))
            await asyncio.sleep(0.05)
            await self.ws.close()
        if self._reader:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


def make_plans(
    n: int, turns: int, clip: Clip, gap_s: float, rng: random.Random, phase: bool = True
) -> list[Plan]:
    gap = round(gap_s / FRAME_S)
    period = clip.frames + gap
    return [
        Plan(lead_in=rng.randrange(period) if phase else 10, turns=turns, clip_frames=clip.frames, gap=gap)
        for _ in range(n)
    ]


async def connect_all(
    url: str, plans: list[Plan], timeout: float = 60.0, parallel: int = 16
) -> list[LoadClient]:
    clients = [LoadClient(i, p) for i, p in enumerate(plans)]
    sem = asyncio.Semaphore(parallel)

    async def go(c: LoadClient) -> None:
        async with sem:
            await c.open(url, timeout)

    results = await asyncio.gather(*(go(c) for c in clients), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        raise RuntimeError(f"{len(failed)} of {len(clients)} clients failed to start: {failed[0]!r}")
    return clients


async def stream_all(
    clients: list[LoadClient],
    clip: Clip,
    wait_reply: bool = False,
    max_wait_s: float = 60.0,
    rng: random.Random | None = None,
    start_in: float = 0.3,
) -> tuple[float, float]:
    """Stream every client's plan; returns (wall start, wall end) of the streaming."""
    rng = rng or random.Random(0)
    loop = asyncio.get_running_loop()
    clip_frames = clip.frame_bytes(AUDIO_TAG)
    base = loop.time() + start_in
    wall0 = time.time() + start_in
    turns = clients[0].plan.turns if clients else 0

    def tail_until(c: LoadClient) -> bool:
        return len(c.first_audio) >= turns and (not wait_reply or c._reply_done(turns - 1))

    await asyncio.gather(
        *(
            c.stream(base + rng.random() * FRAME_S, clip_frames, wait_reply, max_wait_s, tail_until)
            for c in clients
        )
    )
    return wall0, time.time()


# ---- analysis -----------------------------------------------------------------------------


def _match(
    decisions: list[Decision], events: list[tuple[int, int]], sent: list[float]
) -> list[tuple[int, int] | None]:
    """Pair each decision with the event the orchestrator emitted for it.

    `events`: (id_ms, index in the client's event list), in order. When the counts agree the
    pairing is by order (the orchestrator handles a session's frames in order, so this holds
    however late it runs); otherwise each decision takes the first unused event stamped at or
    after its frame was sent."""
    if len(events) == len(decisions):
        return list(events)
    out: list[tuple[int, int] | None] = []
    i = 0
    for d in decisions:
        t = sent[d.frame] * 1000 if d.frame < len(sent) else float("inf")
        while i < len(events) and events[i][0] + 1.5 < t:
            i += 1
        out.append(events[i] if i < len(events) else None)
        if i < len(events):
            i += 1
    return out


def analyze(client: LoadClient, decisions: list[Decision], clip: Clip, end_silence_ms: float) -> dict:
    """Per-turn figures of one client against its offline decisions."""
    sent = client.sent
    ends = [d for d in decisions if d.kind == "end" and d.frame < len(sent)]
    starts = [d for d in decisions if d.kind == "start" and d.frame < len(sent)]
    vad_off = [
        (_id_ms(e) or 0, i)
        for i, e in enumerate(client.events)
        if e.get("type") == "vad" and not e.get("speaking")
    ]
    vad_on = [
        (_id_ms(e) or 0, i)
        for i, e in enumerate(client.events)
        if e.get("type") == "vad" and e.get("speaking")
    ]
    thinking = sum(1 for e in client.events if e.get("type") == "state" and e.get("state") == "THINKING")
    barge_ins = sum(1 for e in client.events if e.get("type") == "interrupted")
    plan = client.plan
    clip_starts = [plan.clip_start(k) for k in range(plan.turns)]

    turns: list[dict] = []
    matched = _match(ends, vad_off, sent)
    for n, (d, ev) in enumerate(zip(ends, matched, strict=False)):
        t_dec = sent[d.frame]
        rec: dict = {
            "frame": d.frame,
            "decision_lag_ms": None,
            "framework_ms": None,
            "overhead_ms": None,
            "missed": True,
        }
        # the question this turn closes: the last one that started before its speech ended
        end_frame = int((d.end_ms or 0) * RATE / 1000) // FRAME
        k = max((i for i, s in enumerate(clip_starts) if s <= end_frame), default=None)
        if ev is not None:
            rec["decision_lag_ms"] = max(0.0, ev[0] - t_dec * 1000)
            nxt = matched[n + 1][1] if n + 1 < len(matched) and matched[n + 1] is not None else None
            reply = next(
                (
                    fa
                    for fa in client.first_audio
                    if fa[2] > ev[1] and (nxt is None or fa[2] <= nxt) and fa[0] > t_dec
                ),
                None,
            )
            if reply is not None:
                rec["missed"] = False
                rec["server_turn"] = reply[1]
                rec["first_audio_t"] = reply[0]
                rec["framework_ms"] = framework_ms(reply[0], t_dec)
                if k is not None:
                    lsf = last_speech_frame(clip_starts[k], clip.speech_end)
                    rec["overhead_ms"] = overhead_ms(reply[0], sent[lsf], end_silence_ms)
                    rec["voice_to_voice_ms"] = (reply[0] - sent[lsf]) * 1000
                    # what the VAD + endpointing itself waits beyond the configured silence
                    rec["vad_delay_ms"] = (t_dec - sent[lsf]) * 1000 - end_silence_ms
        rec["question"] = k
        turns.append(rec)
    start_lags = []
    for d, ev in zip(starts, _match(starts, vad_on, sent), strict=False):
        if ev is not None:
            start_lags.append(max(0.0, ev[0] - sent[d.frame] * 1000))
    answered = sum(1 for t in turns if not t["missed"])
    return {
        "turns": turns,
        "expected": len(ends),
        "questions": plan.turns,
        "missed": len(ends) - answered,
        # turns the stack started, or replies it sent, beyond the ones the replay expects
        "false_turns": max(0, thinking - len(ends), len(client.first_audio) - answered),
        "barge_ins": barge_ins,
        "start_lags_ms": start_lags,
        "pacing_late_ms": [x * 1000 for x in client.late],
        "metrics": [e for e in client.events if e.get("type") == "metrics"],
        "transcripts": [
            e.get("text", "") for e in client.events if e.get("type") == "transcript" and e.get("final")
        ],
        "error": client.error,
    }
