"""Two hosts over one Redis, and the loss of one: each host is a `jarvis up` share (gateway,
orchestrator, stub workers with realistic delays) bound to its own loopback address, 127.0.0.2
("host A") and 127.0.0.3 ("host B"); both use one Redis and one session folder (the shared
volume of a real deployment). Network namespaces would need links out of loopback to reach the
shared Redis, so the hosts are told apart by address, and by their processes.

A conversation starts on host A (A's gateway, A's orchestrator owns it). While a later question
is being answered and one of A's workers holds one of its jobs, every process of host A is killed
(kill -9, by pid). The client reconnects to host B's gateway with its resume secret; B's
orchestrator adopts the session, the question in flight is answered from all its words, the job A's
worker held is handed back and served by B's workers, and the next question is answered too. The
history holds each question once, with all its words."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jarvis.launcher import Stack
from jarvis.redis_server import RedisServer, free_port
from shared.messages import jobs_stream, partial_jobs_stream
from tests.faults.conftest import LLM_DELAY, STT_DELAY, TTS_DELAY, Talker, all_words, question

pytestmark = pytest.mark.faults

HOST_A, HOST_B = "127.0.0.2", "127.0.0.3"
# the job streams a turn's jobs go to, and their groups; and every group a worker process joins
TURN_GROUPS = [(jobs_stream(k), f"{k}-workers") for k in ("stt", "llm", "tts")]
JOB_GROUPS = [*TURN_GROUPS, (partial_jobs_stream("stt"), "stt-partial-workers")]


def host(name: str, addr: str, redis_url: str, sessions: Path, tmp: Path) -> Stack:
    return Stack(
        profile="stub",
        host=addr,
        port=free_port(),
        workdir=tmp / name,
        orchestrators=1,
        roles=("gateway", "orchestrator", "workers"),
        redis_url=redis_url,
        sessions_dir=sessions,
        stub_llm_delay=LLM_DELAY,
        stub_stt_delay=STT_DELAY,
        stub_tts_delay=TTS_DELAY,
        vlm=False,
        env={"JARVIS_LEASE_MS": "1500"},
    )


@pytest.fixture
def one_redis(tmp_path: Path) -> Iterator[str]:
    with RedisServer(workdir=tmp_path / "redis") as server:
        yield server.url


def _pid_of(consumer: str) -> int | None:
    parts = consumer.rsplit("-", 2)  # {kind}-{hostname}-{pid}-{suffix}
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def held_by(r: redis.Redis, pids: set[int]) -> list[str]:
    """The job streams where a consumer with one of these pids holds an unacknowledged job of a
    turn (a final transcript, a reply, a sentence's audio)."""
    streams = []
    for stream, group in TURN_GROUPS:
        try:
            consumers = r.xinfo_consumers(stream, group)
        except redis.ResponseError:
            continue
        if any(c["pending"] and _pid_of(c["name"].decode()) in pids for c in consumers):
            streams.append(stream)
    return streams


def members_of(r: redis.Redis, pids: set[int]) -> list[str]:
    """Consumers of the job groups that belong to these pids (a dead host's, until reaped)."""
    names = []
    for stream, group in JOB_GROUPS:
        with contextlib.suppress(redis.ResponseError):
            names += [
                c["name"].decode()
                for c in r.xinfo_consumers(stream, group)
                if _pid_of(c["name"].decode()) in pids
            ]
    return names


def history(sessions: Path, sid: str) -> list[str]:
    path = sessions / f"{sid}.json"
    return [h["user"] for h in json.loads(path.read_text())["history"]] if path.exists() else []


async def _until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := cond():
            return got
        await asyncio.sleep(0.01)
    raise TimeoutError(what)


async def test_a_host_is_lost_mid_conversation_and_the_other_carries_it_on(one_redis, tmp_path):
    sessions = tmp_path / "shared-sessions"
    a = host("a", HOST_A, one_redis, sessions, tmp_path)
    b = host("b", HOST_B, one_redis, sessions, tmp_path)
    r = redis.Redis.from_url(one_redis)
    t: Talker | None = None
    try:
        a.start(timeout=120)  # host A alone first, so the session is A's
        assert a.url.startswith(f"ws://{HOST_A}:")
        t = await Talker(a).open()
        sid = t.sid
        asked: list[str] = []

        q, words = await question(0)
        t.ask(q)
        asked.append(words)
        await t.wait_for("metrics", turn=1, timeout=30)
        owner = (r.get(f"owner:{sid}") or b"").decode()
        assert _pid_of(owner) in {p.pid for p in a.procs}, owner  # A's orchestrator owns it

        b.start(timeout=120)  # host B joins: its workers read the same job streams
        a_pids = {p.pid for p in a.procs if p.pid is not None}

        # ask until one of A's workers holds a job of the question in flight, then lose host A
        held: list[str] = []
        turn = 1
        while not held:
            turn += 1
            assert turn <= 5, "none of A's workers ever took a job"
            q, words = await question(turn)
            ended = len(t.events("vad", speaking=False))
            t.ask(q)
            asked.append(words)
            await _until(
                lambda n=ended: len(t.events("vad", speaking=False)) > n, 20, "the question never ended"
            )
            deadline = time.monotonic() + 10
            while not held and not t.events("metrics", turn=turn) and time.monotonic() < deadline:
                held = held_by(r, a_pids)
                await asyncio.sleep(0.005)
            if not held:
                await t.wait_for("metrics", turn=turn, timeout=20)  # all on B: ask again
        print(f"losing host A at turn {turn}; its workers hold jobs of {held}")
        t.stack = b  # where the client reconnects once A's gateway is gone
        for p in a.procs:  # every process of host A
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
        for p in a.procs:
            assert p.popen is not None
            p.popen.wait(5)

        # the question in flight is answered by host B, through B's gateway
        done = await t.wait_for("metrics", turn=turn, timeout=30)
        assert t.client is not None and t.client.ws.remote_address[0] == HOST_B
        assert t.sid == sid and t.client.of("metrics", turn=turn), done  # B's gateway delivered it
        owner = (r.get(f"owner:{sid}") or b"").decode()
        assert _pid_of(owner) in {p.pid for p in b.procs}, owner
        # the job A's worker held was handed back (its consumer reaped) and B's workers served it
        await _until(lambda: not members_of(r, a_pids), 10, f"A's consumers still in {held}")

        # the conversation goes on, on host B
        q, words = await question(turn + 1)
        t.ask(q)
        asked.append(words)
        await t.wait_for("metrics", turn=turn + 1, timeout=30)
        await asyncio.sleep(0.5)  # the history is saved just after the metrics
        users = history(sessions, sid)
        assert len(users) == len(asked), (users, asked)
        for got, want in zip(users, asked, strict=True):
            assert all_words(got, want), (users, asked)
    finally:
        if t is not None:
            await t.close()
        r.close()
        b.stop()
        a.stop()
