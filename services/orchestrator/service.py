"""The orchestrator process: owns sessions and runs their turns.

Three loops on one event loop:
- control: takes `start`s from the `ctl` consumer group and claims each session with a
  lease (`owner:{sid}`, SET NX PX); a start for a session another orchestrator owns is
  relayed into that session's input stream, so its owner answers.
- input: one blocking XREAD over every owned `in:{sid}` (plus a wake-up stream), then one
  batched Silero call for every session with a window ready, then one pipelined flush.
- leases: renews the leases it holds, stores each session's safe replay cursor, and adopts
  sessions whose owner died (lease expired): history from the session file, input replayed
  from the cursor, epoch bumped so the dead owner's jobs are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any

import numpy as np
from prometheus_client import Histogram
from redis.exceptions import ResponseError

from services.orchestrator.config import TurnSettings
from services.orchestrator.session import SessionRunner
from shared import codec
from shared import protocol as p
from shared.bus import Bus
from shared.config import Settings
from shared.messages import (
    CTL,
    ORCHESTRATORS,
    SESSIONS,
    Audio,
    ClientEvent,
    SessionStart,
    Wake,
    cursor_key,
    epoch_key,
    in_stream,
    out_stream,
    owner_key,
    wake_stream,
)
from shared.sessions import Session

log = logging.getLogger("jarvis.orchestrator")

FRAME_LAG = Histogram(
    "jarvis_orchestrator_frame_lag_seconds",
    "Audio frame received by the gateway -> its VAD window scored",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
OUT_KEEP_S = 300  # client events older than this are trimmed (a resume reaches back this far)

SWEEP_S = 0.01  # session timers run at most this often (and at their deadlines)
BATCH_ABOVE = 16  # sessions: past this many, reads are paced to batch work
BATCH_MS = 4
WORKERS_TTL_S = 5  # how long "is there a worker for jobs:{kind}" is trusted

_RENEW = """
local lost = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) else table.insert(lost, k) end
end
return lost
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Orchestrator:
    """Hosts its sessions' runners (it is their `SessionHost`) and runs the three loops."""

    def __init__(
        self, settings: Settings, bus: Bus, vad: Any | None = None, resource: Any | None = None
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.vad = vad
        self.resource = resource
        self.turn_settings = TurnSettings()
        mode = self.turn_settings.endpoint.end_of_turn.mode
        if self.turn_settings.endpoint.end_of_turn.wants_audio:
            raise ValueError(
                f"JARVIS_TURN_END_OF_TURN__MODE={mode}: Smart Turn modes run only in `python -m bench "
                "--scenario eot` so far (docs/BENCHMARKS.md, End of turn); use transcript or silence"
            )
        self.id = f"orch-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.wake = wake_stream(self.id)
        self.runners: dict[str, SessionRunner] = {}
        self.outbox: list[tuple[str, Any, int | None]] = []
        self.vad_batch: list[tuple[SessionRunner, np.ndarray, float]] = []
        self.tasks: set[asyncio.Task] = set()
        self._flush_lock = asyncio.Lock()
        self._workers: dict[str, tuple[bool, float]] = {}
        self._refreshing: set[str] = set()
        self._renew = bus.redis.register_script(_RENEW)
        self._release = bus.redis.register_script(_RELEASE)

    # ---- SessionHost: services for runners ---------------------------------------------------

    def put(self, stream: str, msg: Any, maxlen: int | None = None) -> None:
        self.outbox.append((stream, msg, maxlen))

    async def flush(self) -> None:
        async with self._flush_lock:
            while self.outbox:
                batch, self.outbox = self.outbox, []
                await self.bus.add_many(batch)

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("session task failed", exc_info=t.exception())

        task.add_done_callback(done)

    def may_load(self) -> bool:
        return self.resource is not None and not self.resource.known_absent()

    def score_vad(self, runner: SessionRunner, windows: np.ndarray, ts: float) -> None:
        batch = self.vad_batch
        for w in windows:
            batch.append((runner, w, ts))

    async def prepare(
        self, runner: SessionRunner, roles: tuple[str, ...], priority: str, quiet: bool = False
    ) -> None:
        """Make the models a turn needs resident (no-op without a resource service)."""
        if self.resource is None:
            return
        await self.resource.prepare(self, runner, roles, priority, quiet)

    async def release(self, runner: SessionRunner) -> None:
        """The turn is over: its models may be evicted again."""
        if self.resource is not None:
            await self.resource.release(runner)

    async def has_workers(self, kind: str) -> bool:
        """Whether any worker serves `jobs:{kind}` (cached for a few seconds)."""
        now = time.monotonic()
        cached = self._workers.get(kind)
        if cached and now - cached[1] < WORKERS_TTL_S:
            return cached[0]
        try:
            groups = await self.bus.retry(lambda: self.bus.redis.xinfo_groups(f"jobs:{kind}"))
            ok = any(g["consumers"] > 0 for g in groups)
        except ResponseError:  # no such stream yet
            ok = False
        self._workers[kind] = (ok, now)
        return ok

    def workers_known(self, kind: str) -> bool:
        """Whether a worker served `jobs:{kind}` when last asked, without a round trip (a
        stale answer is refreshed in the background; never asked: False)."""
        cached = self._workers.get(kind)
        if (cached is None or time.monotonic() - cached[1] >= WORKERS_TTL_S) and kind not in self._refreshing:
            self._refreshing.add(kind)

            async def refresh() -> None:
                try:
                    await self.has_workers(kind)
                finally:
                    self._refreshing.discard(kind)

            self.spawn(refresh())
        return bool(cached and cached[0])

    async def bump_epoch(self, runner: SessionRunner, event: p.Interrupted) -> int:
        """Atomically start a new epoch and tell the client: no stale audio lands after it."""
        async with self._flush_lock:
            if self.outbox:
                batch, self.outbox = self.outbox, []
                await self.bus.add_many(batch)

            async def run() -> list:
                async with self.bus.redis.pipeline(transaction=True) as pipe:
                    pipe.incr(epoch_key(runner.sid))
                    pipe.xadd(
                        out_stream(runner.sid),
                        codec.entry(ClientEvent(p.dump(event))),
                        maxlen=self.settings.out_maxlen,
                        approximate=True,
                    )
                    return await pipe.execute()

            res = await self.bus.retry(run, "bump epoch")
        return int(res[0])

    async def save(self, runner: SessionRunner) -> None:
        await asyncio.to_thread(runner.session.save, self.settings.sessions_dir)

    async def end_session(self, runner: SessionRunner, quiet: bool = False) -> None:
        sid = runner.sid
        if self.runners.pop(sid, None) is None:
            return
        if runner.turn is not None or runner.last is not None:
            await runner.interrupt(reason="stop")
        if not quiet:
            runner.set_state(p.State.IDLE)
        await self.flush()
        await self.save(runner)
        await self.bus.retry(
            lambda: self.bus.redis.set(cursor_key(sid), runner.cursor, ex=self.settings.session_ttl_s)
        )
        await self._release(keys=[owner_key(sid)], args=[self.id])
        await self.bus.redis.hdel(SESSIONS, sid)
        log.info("session ended", extra={"session": sid})

    # ---- main ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.bus.wait_ready(timeout=60)
        await self.bus.join_group(CTL, ORCHESTRATORS, self.id)
        loops = [
            asyncio.create_task(self._control(), name="control"),
            asyncio.create_task(self._input(), name="input"),
            asyncio.create_task(self._leases(), name="leases"),
        ]
        log.info("ready", extra={"orchestrator": self.id, "vad": type(self.vad).__name__})
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*loops, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = None if t is stopper else t.exception()
                if exc is not None:
                    raise exc
        finally:
            for t in loops:
                t.cancel()
            stopper.cancel()
            await self.bus.redis.xgroup_delconsumer(CTL, ORCHESTRATORS, self.id)
            for runner in list(self.runners.values()):  # let another orchestrator take them at once
                await self.save(runner)
                await self._release(keys=[owner_key(runner.sid)], args=[self.id])
            await self.bus.redis.delete(self.wake)

    # ---- control: session starts ------------------------------------------------------------

    async def _control(self) -> None:
        consumer = self.id
        last_reclaim = 0.0
        while True:
            entries = []
            if time.monotonic() - last_reclaim > 2:
                last_reclaim = time.monotonic()
                entries = await self.bus.reclaim(
                    CTL, ORCHESTRATORS, consumer, 5000, self.settings.max_deliveries
                )
            if not entries:
                # one start at a time: with several orchestrators, sessions spread over all of them
                entries = await self.bus.consume(
                    CTL, ORCHESTRATORS, consumer, block_ms=self.settings.block_ms, count=1
                )
            for eid, msg in entries:
                try:
                    if isinstance(msg, SessionStart):
                        await self._on_start(msg)
                except Exception:
                    log.exception("start failed", extra={"session": getattr(msg, "sid", None)})
                await self.bus.ack(CTL, ORCHESTRATORS, [eid])

    async def _on_start(self, start: SessionStart) -> None:
        sid = start.sid
        if sid in self.runners:
            await self.runners[sid].on_start(start, resumed=True)
            await self.flush()
            return
        r = self.bus.redis
        if not await self.bus.retry(
            lambda: r.set(owner_key(sid), self.id, nx=True, px=self.settings.lease_ms)
        ):
            # owned elsewhere: relay the start to the owner through the session's input
            await self.bus.add(in_stream(sid), start, self.settings.in_maxlen)
            return
        await self._adopt(sid, start)

    async def _adopt(self, sid: str, start: SessionStart | None) -> None:
        """Take a session we now hold the lease of: fresh, resumed, or from a dead owner."""
        r = self.bus.redis
        session = await asyncio.to_thread(Session.load, self.settings.sessions_dir, sid)
        if session is None:
            session = Session(id=sid, pipeline=start.pipeline if start else "sts")
        cursor = await self.bus.retry(lambda: r.get(cursor_key(sid))) or "0-0"
        epoch = int(await self.bus.retry(lambda: r.incr(epoch_key(sid))))  # drop any earlier owner's work
        vad_stream = self.vad.new_stream() if self.vad is not None else None
        runner = SessionRunner(self, session, epoch, cursor, self.settings, self.turn_settings, vad_stream)
        self.runners[sid] = runner
        await self.bus.retry(lambda: r.hset(SESSIONS, sid, self.id))
        if start is not None:
            await runner.on_start(start, resumed=start.resume)
        else:
            log.info("took over session", extra={"session": sid, "cursor": str(cursor)})
            runner.set_state(p.State.LISTENING)
        await self.flush()
        await self.bus.add(self.wake, Wake("join"), 16)

    # ---- input: audio, commands, worker results ----------------------------------------------

    async def _input(self) -> None:
        wake_id: bytes | str = "$"
        next_deadline: float | None = None
        last_sweep = 0.0
        while True:
            streams: dict[str, bytes | str] = {self.wake: wake_id}
            for sid, runner in self.runners.items():
                streams[in_stream(sid)] = runner.cursor
            block = self.settings.block_ms
            if next_deadline is not None:
                block = max(5, min(block, int((next_deadline - time.time()) * 1000)))
            read_at = time.monotonic()
            entries = await self.bus.read(streams, block_ms=block, count=256)
            for stream, eid, msg in entries:
                if stream == self.wake:
                    wake_id = eid
                    continue
                owned = self.runners.get(stream[3:])
                if owned is None:
                    continue
                runner = owned
                runner.cursor = eid
                if msg is None:
                    continue
                try:
                    if type(msg) is Audio:  # the per-frame path: no coroutine
                        runner.on_audio(msg)
                    else:
                        await runner.handle(msg)
                except Exception:
                    log.exception("failed handling %s", type(msg).__name__, extra={"session": runner.sid})
            self._run_vad()
            now = time.time()
            if now - last_sweep >= SWEEP_S or (next_deadline is not None and now >= next_deadline):
                last_sweep = now
                next_deadline = self._sweep(now)
                self._run_vad()  # windows a silent-stream timer produced
            await self.flush()
            if len(self.runners) > BATCH_ABOVE:
                # many sessions: read at most every BATCH_MS, so each read, VAD call and flush
                # carries many sessions' frames (per-round-trip costs dominate otherwise)
                pause = BATCH_MS / 1000 - (time.monotonic() - read_at)
                if pause > 0:
                    await asyncio.sleep(pause)

    def _sweep(self, now: float) -> float | None:
        """Every session's timers; returns the earliest next deadline."""
        deadline: float | None = None
        for runner in list(self.runners.values()):
            d = runner.tick(now)
            if d is not None:
                deadline = d if deadline is None else min(deadline, d)
            if runner.detached_at and now - runner.detached_at > self.turn_settings.idle_timeout_s:
                runner.detached_at = None  # once
                self.spawn(self.end_session(runner, quiet=True))
        return deadline

    def _run_vad(self) -> None:
        """One model call per round for every session with a window ready."""
        batch, self.vad_batch = self.vad_batch, []
        if not batch:
            return
        if self.vad is None:
            raise RuntimeError("server VAD requested but no VAD model is loaded")
        while batch:
            seen: set[int] = set()
            now_round: list[tuple[SessionRunner, np.ndarray, float]] = []
            later: list[tuple[SessionRunner, np.ndarray, float]] = []
            for item in batch:  # a session's windows must go in order, one per call
                (later if id(item[0]) in seen else now_round).append(item)
                seen.add(id(item[0]))
            probs = self.vad.process(
                [r.vad_stream for r, _, _ in now_round], np.stack([w for _, w, _ in now_round])
            )
            now = time.time()
            for (runner, _, ts), prob in zip(now_round, probs, strict=True):
                FRAME_LAG.observe(max(0.0, now - ts))
                if runner.sid in self.runners:
                    runner.on_vad(float(prob), ts)
            batch = later

    # ---- leases ----------------------------------------------------------------------------

    async def _leases(self) -> None:
        period = self.settings.lease_ms / 3000
        last_ttl = 0.0
        while True:
            await asyncio.sleep(period)
            try:
                await self._renew_and_adopt(refresh_ttl=time.monotonic() - last_ttl > 60)
                if time.monotonic() - last_ttl > 60:
                    last_ttl = time.monotonic()
            except Exception:
                log.exception("lease upkeep failed")

    async def _renew_and_adopt(self, refresh_ttl: bool) -> None:
        r = self.bus.redis
        if self.resource is not None:
            await self.resource.refresh()  # so turns can tell at once whether there is one
        sids = list(self.runners)
        if sids:
            lost = await self.bus.retry(
                lambda: self._renew(keys=[owner_key(s) for s in sids], args=[self.id, self.settings.lease_ms])
            )
            for key in lost or []:
                sid = key.decode().split(":", 1)[1]
                log.warning(
                    "lost the lease; another orchestrator owns the session now", extra={"session": sid}
                )
                self.runners.pop(sid, None)
            ttl = self.settings.session_ttl_s
            out_min = f"{int((time.time() - OUT_KEEP_S) * 1000)}-0"
            async with r.pipeline(transaction=False) as pipe:
                for sid, runner in self.runners.items():
                    pipe.set(cursor_key(sid), runner.safe_cursor, ex=ttl)
                    # keep Redis memory per session bounded: input before the replay point and
                    # events older than a resume can reach are no longer needed
                    if runner.safe_cursor not in ("0-0", b"0-0"):
                        pipe.xtrim(in_stream(sid), minid=runner.safe_cursor, approximate=True)
                    pipe.xtrim(out_stream(sid), minid=out_min, approximate=True)
                    if refresh_ttl:
                        for key in (in_stream(sid), out_stream(sid), epoch_key(sid)):
                            pipe.expire(key, ttl)
                await pipe.execute()
        # adopt sessions whose owner is gone
        active = await self.bus.retry(lambda: r.hgetall(SESSIONS))
        for raw_sid in active:
            sid = raw_sid.decode()
            if sid in self.runners:
                continue
            if await r.set(owner_key(sid), self.id, nx=True, px=self.settings.lease_ms):
                try:
                    await self._adopt(sid, None)
                except Exception:
                    log.exception("takeover failed", extra={"session": sid})
                    await self._release(keys=[owner_key(sid)], args=[self.id])
