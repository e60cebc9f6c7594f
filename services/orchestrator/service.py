"""The orchestrator process: owns sessions and runs their turns.

Three loops on one event loop:
- control: takes `start`s from the `ctl` consumer group and claims each session with a
  lease (`owner:{sid}`, SET NX PX); a start for a session another orchestrator owns is
  relayed into that session's input stream, so its owner answers.
- input: one blocking XREAD over every owned `in:{sid}` (plus a wake-up stream), then one
  batched Silero call for every session with a window ready, then one pipelined flush.
- leases: renews the leases it holds (re-claiming one a Redis restart forgot), stores each
  session's safe replay cursor, restores epochs a Redis restart lost, re-runs the turns in
  flight when Redis restarted, and adopts sessions whose owner died (lease expired): history
  and replay cursor from the session file, input replayed from the cursor, epoch bumped so the
  dead owner's jobs are dropped.
- reaper: finds model workers whose heartbeat stopped (`workers:{kind}`), hands each job
  they held back to its session as `JobLost` (the runner dispatches it again) and deletes
  the dead consumer, in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from prometheus_client import Histogram
from redis.exceptions import ResponseError

from services.orchestrator import shared_folder
from services.orchestrator.config import EndpointSettings, TurnSettings
from services.orchestrator.session import SessionRunner
from shared import codec
from shared import protocol as p
from shared.bus import Bus
from shared.config import Settings
from shared.messages import (
    CTL,
    JOB_KINDS,
    ORCHESTRATORS,
    SESSIONS,
    Audio,
    ClientEvent,
    Command,
    Image,
    JobLost,
    ScoredAudio,
    SessionStart,
    Wake,
    cursor_key,
    epoch_key,
    in_stream,
    job_streams,
    out_stream,
    owner_key,
    partial_jobs_stream,
    reap_key,
    secret_key,
    sid_of,
    wake_stream,
    workers_key,
)
from shared.sessions import Session, id_order, stream_id

log = logging.getLogger("jarvis.orchestrator")

FRAME_LAG = Histogram(
    "jarvis_orchestrator_frame_lag_seconds",
    "Audio frame received by the gateway -> its VAD window handled here (windows sent with their "
    "audio; silence the gateway reports in bulk is left out)",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
OUT_KEEP_S = 300  # client events older than this are trimmed (a resume reaches back this far)

SWEEP_S = 0.01  # session timers run at most this often (and at their deadlines)
BATCH_ABOVE = 16  # sessions: past this many, reads are paced to batch work
BATCH_MS = 12  # past BATCH_ABOVE: at most one read per this many ms (bench b: ~9% less CPU than 4)
VAD_CATCH_UP = 8  # windows (256 ms) one session may queue before its VAD call runs mid-read
WORKERS_TTL_S = 1  # how long "is there a worker for jobs:{kind}" is trusted (the reaper refreshes it)
REAP_S = 0.25  # how often dead workers are looked for (one round trip)
# (kind, stream, group) of every job lane whose dead consumers are reaped: each kind's stream
# and the STT process's partial lane (its partials come back as JobLost too, nothing to redo)

# Renew every lease held; one a Redis restart forgot (no key at all) is taken again, since no
# other orchestrator holds it. Only a lease someone else holds now is lost.
_RENEW = """
local lost = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2])
  elseif not v then redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
  else table.insert(lost, k) end
end
return lost
"""
# An epoch only goes up: one a Redis restart lost (the last second before a crash) is put back,
# else every worker write of the session would be refused.
_EPOCHS = """
for i, k in ipairs(KEYS) do
  if tonumber(redis.call('GET', k) or '0') < tonumber(ARGV[i]) then redis.call('SET', k, ARGV[i]) end
end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _check_edge_gate(settings: Settings, endpoint: EndpointSettings) -> None:
    """Warn when the gateway's VAD gate (JARVIS_EDGE_*) cannot cover what a turn slices: its
    audio would then hold silence where the user spoke."""
    if not settings.edge_vad:
        return
    longest = endpoint.end_silence_ms
    if endpoint.end_of_turn.mode != "silence":
        longest = max(longest, endpoint.end_of_turn.ceiling_ms)
    problems = []
    if settings.edge_gate > endpoint.neg_threshold:
        problems.append("JARVIS_EDGE_GATE is above JARVIS_TURN_NEG_THRESHOLD")
    if settings.edge_pre_roll_ms < endpoint.pre_roll_ms:
        problems.append("JARVIS_EDGE_PRE_ROLL_MS is below JARVIS_TURN_PRE_ROLL_MS")
    if settings.edge_hangover_ms <= longest + endpoint.post_roll_ms:
        problems.append("JARVIS_EDGE_HANGOVER_MS does not outlast the longest pause plus the post-roll")
    if problems:
        log.warning("the gateway's VAD gate does not cover the turn settings: %s", "; ".join(problems))


@dataclass
class _Saves:
    """One session's saves in flight: `asked` counts the calls, `written` the last call whose
    state a finished write holds; `users` the calls not yet returned (the entry goes with them)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    asked: int = 0
    written: int = 0
    users: int = 0


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
        _check_edge_gate(settings, self.turn_settings.endpoint)
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
        self._epochs = bus.redis.register_script(_EPOCHS)
        self._opened: dict[str, float] = {}  # sid -> when a client's start opened it here
        self._orphans: set[str] = set()  # sessions seen without an owner at the last scan
        self._folder = ""  # the session folder's id (shared_folder), read at start
        self._redis_run: str | None = None  # Redis's run id: a new one means it restarted
        self._saving: dict[str, _Saves] = {}  # sid -> its session saves in flight
        self._vad_queued: dict[str, int] = {}  # sid -> windows waiting for this round's VAD call
        self._vad_due = False  # a session has a burst of windows waiting (a replay, a fast client)

    # ---- SessionHost: services for runners ---------------------------------------------------

    def put(self, stream: str, msg: Any, maxlen: int | None = None) -> None:
        self.outbox.append((stream, msg, maxlen))

    async def flush(self) -> None:
        async with self._flush_lock:
            while self.outbox:
                batch, self.outbox = self.outbox, []
                await self._write(batch)

    async def _write(self, batch: list[tuple[str, Any, int | None]]) -> None:
        """One batched write; should Redis refuse it (not an outage: those are retried), the
        entries go one by one and only the one it refuses is dropped."""
        try:
            await self.bus.add_many(batch)
        except (ResponseError, ValueError, TypeError) as exc:
            log.error("batched write refused (%s); writing entries one by one", exc)
            for item in batch:
                try:
                    await self.bus.add_many([item])
                except (ResponseError, ValueError, TypeError) as one:
                    log.error("dropped an entry for %s: %s", item[0], one)

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
        n = self._vad_queued.get(runner.sid, 0) + len(windows)
        self._vad_queued[runner.sid] = n
        if n >= VAD_CATCH_UP:
            self._vad_due = True

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
        ok = bool(await self.bus.live_workers(workers_key(kind), self.settings.worker_dead_ms))
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

    async def bump_epoch(self, runner: SessionRunner, event: p.Interrupted | None) -> int:
        """Atomically start a new epoch and tell the client (unless `event` is None): no stale
        audio lands after it."""
        async with self._flush_lock:
            if self.outbox:
                batch, self.outbox = self.outbox, []
                await self._write(batch)

            async def run() -> list:
                async with self.bus.redis.pipeline(transaction=True) as pipe:
                    pipe.incr(epoch_key(runner.sid))
                    if event is not None:
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
        """Write the session file, and with it the replay cursor its history is complete up to
        (a new owner replays from there: no finished turn twice, none lost); then the same
        cursor in Redis. Returns once a write begun after the call has landed.

        One write per session at a time, in order (an older write never replaces a newer file),
        and saves asked for while one runs are coalesced into the one after it: each write holds
        the whole history serialized, so saves piling up on a busy host (one per turn) must not
        mean one serialized history per turn in memory at once."""
        sid = runner.sid
        state = self._saving.get(sid)
        if state is None:
            state = self._saving[sid] = _Saves()
        state.users += 1
        state.asked += 1
        mine = state.asked
        try:
            async with state.lock:
                if state.written >= mine:  # a write begun after this call has landed
                    return
                upto = state.asked
                cursor = stream_id(runner.safe_cursor)
                runner.session.cursor = cursor
                await asyncio.to_thread(runner.session.save, self.settings.sessions_dir)
                state.written = upto
                if self.runners.get(sid) is runner:
                    await self.bus.retry(
                        lambda: self.bus.redis.set(cursor_key(sid), cursor, ex=self.settings.session_ttl_s)
                    )
        finally:
            state.users -= 1
            if not state.users:
                del self._saving[sid]

    async def end_session(self, runner: SessionRunner, quiet: bool = False) -> None:
        sid = runner.sid
        if self.runners.pop(sid, None) is None:
            return
        if runner.turn is not None or runner.last is not None:
            await runner.interrupt(reason="stop")
        if not quiet:
            runner.set_state(p.State.IDLE)
        await self.flush()
        runner.safe_cursor = runner.cursor  # everything read is handled: a resume replays none of it
        await self.save(runner)
        ttl = self.settings.session_ttl_s
        self._opened.pop(sid, None)

        async def done() -> None:
            async with self.bus.redis.pipeline(transaction=False) as pipe:
                pipe.set(cursor_key(sid), stream_id(runner.cursor), ex=ttl)
                for key in (in_stream(sid), out_stream(sid), epoch_key(sid)):
                    pipe.expire(key, ttl)  # the session's keys go once it has been idle this long
                pipe.hdel(SESSIONS, sid)
                await pipe.execute()

        await self.bus.retry(done, "end session")
        await self._release(keys=[owner_key(sid)], args=[self.id])
        log.info("session ended", extra={"session": sid})

    # ---- main ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.bus.wait_ready(timeout=60)
        folder = self.settings.sessions_dir
        self._folder = await asyncio.to_thread(shared_folder.folder_id, folder)
        await shared_folder.check(self.bus, folder, self._folder)  # refuses a folder of its own
        await self.bus.join_group(CTL, ORCHESTRATORS, self.id)
        loops = [
            asyncio.create_task(self._control(), name="control"),
            asyncio.create_task(self._input(), name="input"),
            asyncio.create_task(self._leases(), name="leases"),
            asyncio.create_task(self._reaper(), name="reaper"),
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
                except Exception as exc:
                    log.exception("start failed", extra={"session": getattr(msg, "sid", None)})
                    if isinstance(msg, SessionStart):
                        await self._start_failed(msg.sid, exc)
                await self.bus.ack(CTL, ORCHESTRATORS, [eid])

    async def _start_failed(self, sid: str, exc: Exception) -> None:
        """Tell the client its start failed (it would wait for `ready` forever) and let go."""
        fatal = sid not in self.runners
        if fatal:
            await self._release(keys=[owner_key(sid)], args=[self.id])
        err = p.Error(
            code=p.ErrorCode.INTERNAL,
            message=f"the session could not start: {type(exc).__name__}",
            fatal=fatal,
        )
        await self.bus.add(out_stream(sid), ClientEvent(p.dump(err)), self.settings.out_maxlen)

    async def _on_start(self, start: SessionStart) -> None:
        sid = start.sid
        if sid in self.runners:
            self._opened[sid] = start.ts
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
        session, problem = await asyncio.to_thread(self._load, sid)
        existed = session is not None
        if session is None:
            session = Session(id=sid, pipeline=start.pipeline if start else "sts")
        cursor = max(
            stream_id(await self.bus.retry(lambda: r.get(cursor_key(sid))) or "0-0"),
            session.cursor,
            key=id_order,
        )
        await self._secret(session)
        vad_stream = self.vad.new_stream() if self.vad is not None else None
        runner = SessionRunner(self, session, 0, cursor, self.settings, self.turn_settings, vad_stream)
        self.runners[sid] = runner
        ttl = self.settings.session_ttl_s

        async def claim() -> list:
            async with r.pipeline(transaction=False) as pipe:
                pipe.hset(SESSIONS, sid, self.id)
                for key in (in_stream(sid), out_stream(sid), epoch_key(sid)):
                    pipe.expire(key, ttl)  # bounded from the start, even if the session ends at once
                return await pipe.execute()

        await self.bus.retry(claim, "claim session")
        if start is not None:
            runner.epoch = int(await self.bus.retry(lambda: r.incr(epoch_key(sid))))  # drop earlier work
            self._opened[sid] = start.ts
            if problem:
                runner.error(p.ErrorCode.INTERNAL, problem)
            await runner.on_start(start, resumed=start.resume and existed)
        else:
            log.info("took over session", extra={"session": sid, "cursor": str(cursor)})
            # the dead owner's jobs are dropped, and the client told that the turn it may have
            # been answering is answered again from its words (replayed from the cursor)
            runner.epoch = await self.bump_epoch(runner, p.Interrupted(turn=runner.next_turn, continued=True))
            runner.detached_at = time.time()  # ended after the idle timeout unless its client is there
            runner.set_state(p.State.LISTENING)
        await self.flush()
        await self.bus.add(self.wake, Wake("join"), 16)

    def _load(self, sid: str) -> tuple[Session | None, str | None]:
        """The saved session; one that can't be read is set aside (kept, never overwritten) and
        the session starts without history, with the reason for the client."""
        try:
            return Session.load(self.settings.sessions_dir, sid), None
        except (ValueError, OSError) as exc:
            path = Session.path(self.settings.sessions_dir, sid)
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            try:
                path.rename(aside)
            except OSError:
                aside = path
            log.error(
                "unreadable session file set aside: %s", exc, extra={"session": sid, "path": str(aside)}
            )
            return (
                None,
                f"the session's saved history could not be read (kept as {aside.name}); it starts anew",
            )

    async def _secret(self, session: Session) -> None:
        """The session file keeps the resume secret's hash (the durable record); Redis holds it for
        the gateway's check. Whichever has it gives it to the other."""
        key = secret_key(session.id)
        r = self.bus.redis
        held = await self.bus.retry(lambda: r.get(key))
        if held is not None:
            session.secret_hash = held.decode()
            await self.bus.retry(lambda: r.expire(key, self.settings.resume_ttl_s))
        elif session.secret_hash:
            await self.bus.retry(lambda: r.set(key, session.secret_hash, ex=self.settings.resume_ttl_s))

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
            try:
                entries = await self.bus.read(streams, block_ms=block, count=256)
            except ResponseError as exc:  # not an outage (those are retried inside): never end the loop
                log.error("input read refused: %s", exc)
                await asyncio.sleep(0.1)
                entries = []
            read_wall = time.time()
            for stream, eid, msg in entries:
                if stream == self.wake:
                    wake_id = eid
                    continue
                owned = self.runners.get(sid_of(stream))
                if owned is None:
                    continue
                runner = owned
                runner.cursor = eid
                if msg is None:
                    continue
                try:
                    if type(msg) is Audio:  # the per-frame path: no coroutine
                        if runner.detached_at is not None and msg.ts > runner.detached_at:
                            runner.detached_at = None  # its client is there
                        runner.received_at = read_wall
                        runner.on_audio(msg)
                        if self._vad_due:  # score a burst as it comes: idle-audio trimming must
                            self._run_vad()  # not drop speech the detector has not seen yet
                    elif type(msg) is ScoredAudio:  # scored at the gateway: speech, or silence in bulk
                        if runner.detached_at is not None and msg.ts > runner.detached_at:
                            runner.detached_at = None
                        runner.received_at = read_wall
                        if msg.pcm:  # silence is reported in bulk, late on purpose: not a lag
                            FRAME_LAG.observe(max(0.0, read_wall - msg.ts))
                        runner.on_scored(msg)
                    elif self._stale_stop(runner.sid, msg):
                        log.info("ignored a stop sent before the session was opened again")
                    else:
                        if isinstance(msg, Command | Image) and runner.detached_at is not None:
                            if msg.ts > runner.detached_at:
                                runner.detached_at = None
                        elif isinstance(msg, SessionStart):
                            self._opened[runner.sid] = msg.ts
                        await runner.handle(msg)
                except Exception:
                    log.exception("failed handling %s", type(msg).__name__, extra={"session": runner.sid})
            try:
                self._run_vad()
                now = time.time()
                if now - last_sweep >= SWEEP_S or (next_deadline is not None and now >= next_deadline):
                    last_sweep = now
                    next_deadline = self._sweep(now)
                    self._run_vad()  # windows a silent-stream timer produced
                await self.flush()
            except Exception:
                log.exception("input round failed")
                await asyncio.sleep(0.05)
            if len(self.runners) > BATCH_ABOVE:
                # many sessions: read at most every BATCH_MS, so each read, VAD call and flush
                # carries many sessions' frames (per-round-trip costs dominate otherwise)
                pause = BATCH_MS / 1000 - (time.monotonic() - read_at)
                if pause > 0:
                    await asyncio.sleep(pause)

    def _stale_stop(self, sid: str, msg: Any) -> bool:
        """A `stop` from before the client's latest start (replayed input): the session was
        opened again since, so it must not end it again."""
        return type(msg) is Command and msg.body.get("type") == "stop" and msg.ts < self._opened.get(sid, 0.0)

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
        self._vad_queued.clear()
        self._vad_due = False
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
        last_ttl, last_folder = 0.0, time.monotonic()
        while True:
            await asyncio.sleep(period)
            try:
                await self._renew_and_adopt(refresh_ttl=time.monotonic() - last_ttl > 60)
                if time.monotonic() - last_ttl > 60:
                    last_ttl = time.monotonic()
                if time.monotonic() - last_folder > shared_folder.KEEP_MS / 6000:
                    last_folder = time.monotonic()
                    await shared_folder.check(self.bus, self.settings.sessions_dir, self._folder)
            except shared_folder.FolderMismatch as exc:
                log.error("%s", exc)
            except Exception:
                log.exception("lease upkeep failed")

    async def _renew_and_adopt(self, refresh_ttl: bool) -> None:
        r = self.bus.redis
        if self.resource is not None:
            await self.resource.refresh()  # so turns can tell at once whether there is one
        restarted = await self._redis_restarted()
        sids = list(self.runners)
        if sids:
            lost: list[bytes] = []
            keys = [owner_key(s) for s in sids]
            for group in self.bus.slot_groups(keys):  # one call; on a cluster one per slot
                part = [keys[i] for i in group]
                lost += await self.bus.retry(
                    partial(self._renew, keys=part, args=[self.id, self.settings.lease_ms]), "renew"
                )
            for raw in lost:
                sid = sid_of(raw.decode())
                log.warning(
                    "lost the lease; another orchestrator owns the session now", extra={"session": sid}
                )
                self.runners.pop(sid, None)
                self._opened.pop(sid, None)
            runners = list(self.runners.values())
            keys = [epoch_key(x.sid) for x in runners]
            for group in self.bus.slot_groups(keys) if runners else []:
                await self.bus.retry(
                    partial(
                        self._epochs, keys=[keys[i] for i in group], args=[runners[i].epoch for i in group]
                    ),
                    "epochs",
                )
            ttl = self.settings.session_ttl_s
            out_min = f"{int((time.time() - OUT_KEEP_S) * 1000)}-0"
            async with r.pipeline(transaction=False) as pipe:
                for sid, runner in self.runners.items():
                    pipe.hset(SESSIONS, sid, self.id)  # a Redis restart may have lost it
                    if not self._saving.get(sid):  # a save in flight writes its own cursor
                        pipe.set(cursor_key(sid), stream_id(runner.safe_cursor), ex=ttl)
                    # keep Redis memory per session bounded: input before the replay point and
                    # events older than a resume can reach are no longer needed
                    if stream_id(runner.safe_cursor) != "0-0":
                        pipe.xtrim(in_stream(sid), minid=stream_id(runner.safe_cursor), approximate=True)
                    pipe.xtrim(out_stream(sid), minid=out_min, approximate=True)
                    if refresh_ttl:
                        for key in (in_stream(sid), out_stream(sid), epoch_key(sid)):
                            pipe.expire(key, ttl)
                await pipe.execute()
            if restarted:
                # what was in flight may be gone with the last second Redis did not write to disk
                for runner in list(self.runners.values()):
                    runner.recover()
        if refresh_ttl:
            jobs_min = f"{int((time.time() - self.settings.jobs_keep_s) * 1000)}-0"
            async with r.pipeline(transaction=False) as pipe:
                for kind in JOB_KINDS:
                    for stream in job_streams(kind, self.settings.job_shards):
                        pipe.xtrim(stream, minid=jobs_min, approximate=True)
                await pipe.execute()
        await self._adopt_orphans()

    async def _adopt_orphans(self) -> None:
        """Adopt sessions whose owner is gone: seen without a lease on two scans in a row, so an
        owner that is alive re-takes a lease a Redis restart forgot before anyone else does."""
        r = self.bus.redis
        active = [raw.decode() for raw in await self.bus.retry(lambda: r.hgetall(SESSIONS))]
        candidates = [sid for sid in active if sid not in self.runners]
        if not candidates:
            self._orphans.clear()
            return
        async with r.pipeline(transaction=False) as pipe:
            for sid in candidates:
                pipe.exists(owner_key(sid))
            held = await pipe.execute()
        missing = {sid for sid, h in zip(candidates, held, strict=True) if not h}
        ready, self._orphans = missing & self._orphans, missing - self._orphans
        for sid in ready:
            if await r.set(owner_key(sid), self.id, nx=True, px=self.settings.lease_ms):
                try:
                    await self._adopt(sid, None)
                except Exception:
                    log.exception("takeover failed", extra={"session": sid})
                    self.runners.pop(sid, None)
                    await self._release(keys=[owner_key(sid)], args=[self.id])

    async def _redis_restarted(self) -> bool:
        """True once after Redis came back as a new process (its run id changed), or another
        process took over (a Sentinel failover): what was in flight may be lost with it."""
        run = await self.bus.server_id()
        before, self._redis_run = self._redis_run, run
        if before is not None and before != run:
            log.warning("redis restarted or failed over; re-running the turns in flight")
            return True
        return False

    # ---- reaper: the jobs of workers that died -------------------------------------------

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(REAP_S)
            try:
                await self._reap()
            except Exception:
                log.exception("reaping dead workers failed")

    async def _reap(self) -> None:
        """One round (concurrent calls) for every job stream's consumers and every kind's live
        workers; then, for each consumer whose heartbeat stopped, its jobs go back to their
        sessions as `JobLost`."""
        dead_ms = self.settings.worker_dead_ms
        consumers, live = await self._liveness(dead_ms)
        now = time.monotonic()
        for kind in JOB_KINDS:
            self._workers[kind] = (bool(live[kind]), now)
        for (kind, stream, group), names in consumers.items():
            for name, idle in names:
                if name in live[kind] or idle < dead_ms:
                    continue
                # one orchestrator reaps each dead consumer
                claim = partial(self.bus.redis.set, reap_key(stream, name), self.id, nx=True, px=10_000)
                if not await self.bus.retry(claim):
                    continue
                held = await self.bus.take_pending(stream, group, name)
                notices = [
                    (in_stream(job.sid), JobLost.of(kind, job), self.settings.in_maxlen)
                    for _, job in held
                    if job is not None and hasattr(job, "sid")
                ]
                await self.bus.drop_consumer(stream, group, name, [eid for eid, _ in held], notices)
                log.warning(
                    "%s worker %s is gone from %s; %d job(s) handed back to their sessions",
                    kind,
                    name,
                    stream,
                    len(notices),
                )

    def _reaped_lanes(self) -> list[tuple[str, str, str]]:
        """(kind, stream, group) of every consumer group workers join: each shard of each job
        kind, and of the STT partial lane."""
        shards = self.settings.job_shards
        lanes = [(kind, s, f"{kind}-workers") for kind in JOB_KINDS for s in job_streams(kind, shards)]
        lanes += [
            ("stt", partial_jobs_stream("stt", k), "stt-partial-workers") for k in range(max(1, shards))
        ]
        return lanes

    async def _liveness(
        self, dead_ms: int
    ) -> tuple[dict[tuple[str, str, str], list[tuple[str, int]]], dict[str, set[str]]]:
        """(kind, stream, group) of each reaped lane -> its consumers (name, idle ms); kind -> live
        worker names."""
        lanes = self._reaped_lanes()

        async def info() -> list[Any]:
            async with self.bus.redis.pipeline(transaction=False) as pipe:
                for _, stream, group in lanes:
                    pipe.xinfo_consumers(stream, group)
                return await pipe.execute(raise_on_error=False)

        res, *alive = await asyncio.gather(
            self.bus.retry(info, "liveness"),
            *(self.bus.live_workers(workers_key(kind), dead_ms) for kind in JOB_KINDS),
        )
        consumers = {
            lane: [] if isinstance(r, Exception) else [(stream_id(c["name"]), int(c["idle"])) for c in r]
            for lane, r in zip(lanes, res, strict=True)
        }
        return consumers, dict(zip(JOB_KINDS, alive, strict=True))
