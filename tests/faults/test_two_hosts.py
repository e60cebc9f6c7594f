"""Two hosts over one Redis, and the loss of one: each host is one share of a stack (gateway,
orchestrator, stub workers with realistic delays), run and supervised as `jarvis up` runs it;
both use one Redis and one session folder (the shared volume of a real deployment).

The hosts are network namespaces the test creates where it can (root and `ip netns`): each has
only its own loopback, Redis is reached through a Unix socket and the client dials a host's
gateway from inside its namespace, so nothing listens beyond loopback. Elsewhere the hosts are
the loopback addresses 127.0.0.2 ("host A") and 127.0.0.3 ("host B"), told apart by their
processes. `JARVIS_TEST_HOSTS=netns|addresses` picks one.

A conversation starts on host A (A's gateway, A's orchestrator owns it). While a later question
is being answered and one of A's workers holds one of its jobs, every process of host A is killed
(frozen, then kill -9, by pid). The client reconnects to host B's gateway with its resume secret;
B's orchestrator adopts the session, the question in flight is answered from all its words, the
job A's worker held is handed back and served by B's workers, and the next question is answered
too. The history holds each question once, with all its words."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jarvis.launcher import ROOT, Stack
from jarvis.redis_server import free_port
from shared.messages import jobs_stream, owner_key, partial_jobs_stream
from tests.faults.conftest import LLM_DELAY, STT_DELAY, TTS_DELAY, Talker, all_words, question
from tests.support import netns
from tests.support.client import Client

pytestmark = pytest.mark.faults

# the job streams a turn's jobs go to, and their groups; and every group a worker process joins
TURN_GROUPS = [(jobs_stream(k), f"{k}-workers") for k in ("stt", "llm", "tts")]
JOB_GROUPS = [*TURN_GROUPS, (partial_jobs_stream("stt"), "stt-partial-workers")]


def share(name: str, addr: str, port: int, redis_url: str, sessions: Path, tmp: Path) -> dict[str, Any]:
    """One host's share: what `jarvis up --roles gateway,orchestrator,workers --host ADDR
    --redis-url URL --sessions-dir SHARED` runs, on stub models with realistic delays."""
    return {
        "profile": "stub",
        "host": addr,
        "port": port,
        "workdir": str(tmp / name),
        "orchestrators": 1,
        "roles": ["gateway", "orchestrator", "workers"],
        "redis_url": redis_url,
        "sessions_dir": str(sessions),
        "stub_llm_delay": LLM_DELAY,
        "stub_stt_delay": STT_DELAY,
        "stub_tts_delay": TTS_DELAY,
        "vlm": False,
        "env": {"JARVIS_LEASE_MS": "1500"},
    }


class AddressHost:
    """A host as a loopback address of its own; its share runs from the test, unsupervised (a
    lost host stays lost)."""

    def __init__(self, name: str, addr: str, redis_url: str, sessions: Path, tmp: Path) -> None:
        self.name = name
        self.stack = Stack(**share(name, addr, free_port(), redis_url, sessions, tmp))

    def start(self) -> None:
        self.stack.start(timeout=120)

    async def dial(self) -> Client:
        c = await Client.open(self.stack.url)
        c.host = self.name  # type: ignore[attr-defined]
        return c

    def pids(self) -> set[int]:
        """The host's live processes."""
        return {p.pid for p in self.stack.procs if p.pid is not None and p.alive()}

    def lose(self) -> None:
        """kill -9 every process of the host."""
        for p in self.stack.procs:
            if p.pid is not None:
                os.kill(p.pid, signal.SIGKILL)
        for p in self.stack.procs:
            if p.popen is not None:
                p.popen.wait(5)

    def stop(self) -> None:
        self.stack.stop()


class NamespaceHost:
    """A host as a network namespace: its share runs there under `jarvis up`'s supervision, its
    gateway on the namespace's own 127.0.0.1."""

    PORT = 8765  # each namespace has its own loopback: both hosts use the same port

    def __init__(self, name: str, redis_url: str, sessions: Path, tmp: Path) -> None:
        self.name = name
        self.kw = share(name, "127.0.0.1", self.PORT, redis_url, sessions, tmp)
        self.log = tmp / f"{name}-host.log"
        self.ns = netns.Netns(f"jarvis-{name}")
        self.runner: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "tests.support.host_share", json.dumps(self.kw)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "wb") as err:
            self.runner = subprocess.Popen(
                self.ns.argv(argv), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err
            )
        assert self.runner.stdout is not None
        line = self.runner.stdout.readline()  # "ready", or nothing when it failed
        if line.strip() != b"ready":
            raise RuntimeError(f"host {self.name} did not start: {self.log.read_text()[-2000:]}")

    async def dial(self) -> Client:
        sock = await asyncio.to_thread(self.ns.connect, "127.0.0.1", self.PORT)
        c = await Client.open(f"ws://127.0.0.1:{self.PORT}/ws", sock=sock)
        c.host = self.name  # type: ignore[attr-defined]
        return c

    def pids(self) -> set[int]:
        return set(self.ns.pids())

    def lose(self) -> None:
        """Every process in the namespace, frozen at once (so the supervisor restarts nothing and
        nobody exits cleanly), then kill -9."""
        pids = self.ns.pids()
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if self.runner is not None:
            self.runner.wait(5)

    def stop(self) -> None:
        try:
            if self.runner is not None and self.runner.poll() is None:
                self.runner.terminate()  # it stops everything it started, by pid
                try:
                    self.runner.wait(20)
                except subprocess.TimeoutExpired:
                    self.runner.kill()
                    self.runner.wait()
            for pid in self.ns.pids():  # anything left behind
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            if self.runner is not None and self.runner.stdout is not None:
                self.runner.stdout.close()
            self.ns.delete()


def _mode() -> str:
    wanted = os.environ.get("JARVIS_TEST_HOSTS")
    why = netns.unavailable()
    if wanted == "netns" and why:
        pytest.skip(f"network namespaces asked for but unavailable: {why}")
    return wanted or ("addresses" if why else "netns")


@contextlib.contextmanager
def unix_redis() -> Iterator[str]:
    """One Redis for both hosts, on a Unix socket only (no TCP port): reachable from every
    namespace through the file system."""
    folder = Path(tempfile.mkdtemp(prefix="jarvis-redis-"))  # short: socket paths are bounded
    sock = folder / "redis.sock"
    argv = ["redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with contextlib.closing(redis.Redis(unix_socket_path=str(sock))) as r:
                    r.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"unix://{sock}?db=0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


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


async def test_a_host_is_lost_mid_conversation_and_the_other_carries_it_on(tmp_path):
    mode = _mode()
    print(f"hosts as {mode}")
    sessions = tmp_path / "shared-sessions"
    with unix_redis() as url:
        hosts: list[AddressHost | NamespaceHost] = []
        r = redis.Redis.from_url(url)
        try:
            for name, addr in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
                hosts.append(
                    NamespaceHost(name, url, sessions, tmp_path)
                    if mode == "netns"
                    else AddressHost(name, addr, url, sessions, tmp_path)
                )
            a, b = hosts
            await _lose_a_host(a, b, r, sessions)
        finally:
            r.close()
            for h in reversed(hosts):
                h.stop()


async def _lose_a_host(a, b, r: redis.Redis, sessions: Path) -> None:
    a.start()  # host A alone first, so the session is A's
    t = await Talker(None, dial=a.dial).open()
    try:
        sid = t.sid
        asked: list[str] = []

        q, words = await question(0)
        t.ask(q)
        asked.append(words)
        await t.wait_for("metrics", turn=1, timeout=30)
        a_pids = a.pids()
        owner = (r.get(owner_key(sid)) or b"").decode()
        assert _pid_of(owner) in a_pids, owner  # A's orchestrator owns it

        b.start()  # host B joins: its workers read the same job streams

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
        t.dial = b.dial  # where the client reconnects once A's gateway is gone
        a.lose()  # every process of host A, kill -9
        await _until(lambda: not a.pids() & a_pids, 5, "host A's processes outlived kill -9")

        # the question in flight is answered by host B, through B's gateway
        done = await t.wait_for("metrics", turn=turn, timeout=30)
        assert t.client is not None and t.client.host == "b"  # type: ignore[attr-defined]
        assert t.sid == sid and t.client.of("metrics", turn=turn), done  # B's gateway delivered it
        owner = (r.get(owner_key(sid)) or b"").decode()
        assert _pid_of(owner) in b.pids(), owner
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
        await t.close()
