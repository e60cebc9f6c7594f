"""Local Redis topologies for tests and benchmarks, every process on loopback and stopped by its pid:
a 3-master Redis Cluster (`redis-server --cluster-enabled yes` x3, `redis-cli --cluster create`)
and a Sentinel-watched primary (one primary, one replica, three Sentinels)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from jarvis.redis_server import free_port, redis_binary

SERVICE = "jarvis"  # the Sentinel service name


def _ask(port: int, *cmd: str, timeout: float = 0.5) -> str:
    """One inline command to the server on `port`, its raw reply ('' when unreachable)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall((" ".join(cmd) + "\r\n").encode())
            time.sleep(0.02)
            return s.recv(65536).decode(errors="replace")
    except OSError:
        return ""


class Node:
    """One redis-server process (data node or Sentinel) in its own folder."""

    def __init__(self, workdir: Path, *args: str, sentinel_conf: str | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir / str(self.port)
        self.workdir.mkdir(parents=True)
        argv = [redis_binary()]
        if sentinel_conf is not None:  # a Sentinel rewrites its config file: one of its own
            conf = self.workdir / "sentinel.conf"
            conf.write_text(f"port {self.port}\nbind 127.0.0.1\n{sentinel_conf}")
            argv += [str(conf), "--sentinel"]
        else:
            argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            argv += ["--dir", str(self.workdir), *args]
        self.proc = subprocess.Popen(
            argv, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait(self, timeout: float = 10.0) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} exited with {self.proc.returncode}")
            if _ask(self.port, "PING").startswith("+PONG"):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def kill(self) -> None:
        """kill -9: a crash, no shutdown."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def _nodes() -> Iterator[tuple[Path, list[Node]]]:
    tmp = Path(tempfile.mkdtemp(prefix="jarvis-redis-topology-"))
    nodes: list[Node] = []
    try:
        yield tmp, nodes
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def redis_cluster(masters: int = 3, timeout: float = 30.0) -> Iterator[str]:
    """A Redis Cluster of `masters` primaries and no replicas; yields its redis+cluster:// URL."""
    with _nodes() as (tmp, nodes):
        for _ in range(masters):
            nodes.append(
                Node(
                    tmp,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",  # the cluster bus, on a free port of its own
                    str(free_port()),
                    "--cluster-node-timeout",
                    "2000",
                )
            )
        for n in nodes:
            n.wait()
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        made = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if made.returncode:
            raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout[-2000:]}{made.stderr}")
        deadline = time.monotonic() + timeout
        while not all("cluster_state:ok" in _ask(n.port, "CLUSTER", "INFO") for n in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield "redis+cluster://" + ",".join(addresses)


class SentinelSetup:
    """One primary, one replica, three Sentinels (quorum 2, a primary silent 1 s is down)."""

    def __init__(self, tmp: Path, nodes: list[Node]) -> None:
        self.primary = Node(tmp)
        nodes.append(self.primary.wait())
        self.replica = Node(tmp, "--replicaof", "127.0.0.1", str(self.primary.port))
        nodes.append(self.replica.wait())
        conf = (
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.sentinels = [Node(tmp, sentinel_conf=conf) for _ in range(3)]
        nodes.extend(self.sentinels)
        for s in self.sentinels:
            s.wait()

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{SERVICE}"

    def primary_port(self) -> int | None:
        """The primary's port as the first Sentinel that answers names it."""
        for s in self.sentinels:
            reply = _ask(s.port, "SENTINEL", "get-master-addr-by-name", SERVICE)
            parts = [x for x in reply.split("\r\n") if x and not x.startswith(("*", "$"))]
            if len(parts) == 2 and parts[1].isdigit():
                return int(parts[1])
        return None

    def wait_replicating(self, timeout: float = 20.0) -> None:
        """Until the replica is in sync and every Sentinel knows it (a failover can pick it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            synced = "master_link_status:up" in _ask(self.replica.port, "INFO", "replication")
            known = all(
                "num-slaves\r\n$1\r\n1" in _ask(s.port, "SENTINEL", "master", SERVICE) for s in self.sentinels
            )
            if synced and known:
                return
            time.sleep(0.1)
        raise RuntimeError("the replica did not sync, or the Sentinels do not know it")


@contextlib.contextmanager
def primary_and_replica() -> Iterator[tuple[Node, Node]]:
    """A primary and its replica, in sync (no Sentinels): for measuring replication."""
    with _nodes() as (tmp, nodes):
        primary = Node(tmp)
        nodes.append(primary.wait())
        replica = Node(tmp, "--replicaof", "127.0.0.1", str(primary.port))
        nodes.append(replica.wait())
        deadline = time.monotonic() + 20
        while "master_link_status:up" not in _ask(replica.port, "INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
            time.sleep(0.1)
        yield primary, replica


@contextlib.contextmanager
def redis_sentinel() -> Iterator[SentinelSetup]:
    with _nodes() as (tmp, nodes):
        setup = SentinelSetup(tmp, nodes)
        setup.wait_replicating()
        yield setup


def flush(url: str) -> None:
    """Empty every database of the Redis at `url` (every primary of a cluster)."""
    from shared import redis_url

    r = redis_url.sync_client(url)
    try:
        r.flushall()
    finally:
        r.close()
