#!/usr/bin/env python3
"""The images' HEALTHCHECK: one script, a check per service (exit 0 = healthy).

    jarvis-healthcheck               pick the check from the service running in this container
    jarvis-healthcheck http URL      GET URL answers 2xx/3xx
    jarvis-healthcheck bus           this container's service is connected to Redis and working

Which service runs is read from the processes in the container (`python -m services.X`),
so one image serves every service and each still gets its own check:
- gateway: GET http://127.0.0.1:$JARVIS_PORT/healthz
- the llama.cpp server (`services.llm.llamacpp`): GET /openapi.json on its --port (not
  /v1/models, which waits for the model and, without --interrupt_requests False, cuts a reply)
- every other service (orchestrator, stt, llm, tts, vlm, resource): `bus`. A worker connects
  to Redis, loads its model, and only then starts consuming its job stream, so "one of
  this container's Redis connections has run a command past start-up (XREADGROUP, XREAD,
  ...)" means "model loaded and serving". The check matches Redis's CLIENT LIST against
  this container's own TCP connections (/proc/net/tcp*: the network namespace is the
  container's), so it needs no cooperation from the service and works with any number
  of replicas.
Standard library only (it runs every few seconds; no redis-py import).
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.parse
import urllib.request
from pathlib import Path

# commands a service runs before it is ready (connect, ping, create its consumer group)
STARTUP_CMDS = {
    "NULL",
    "ping",
    "hello",
    "auth",
    "select",
    "info",
    "client|setinfo",
    "client|setname",
    "client|list",
    "client|id",
    "xgroup|create",
    "xgroup",
    "script|load",
    "command|docs",
}


def fail(msg: str) -> int:
    print(f"unhealthy: {msg}")
    return 1


def check_http(url: str, timeout: float = 3.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if r.status < 400:
                print(f"ok: {url} {r.status}")
                return 0
            return fail(f"{url} answered {r.status}")
    except OSError as exc:
        return fail(f"{url}: {exc}")


# ---- Redis, spoken directly (RESP2) ---------------------------------------------------


def _resp_cmd(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _resp_read(f) -> object:
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise ConnectionError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        return [_resp_read(f) for _ in range(int(rest))]
    raise ConnectionError(f"unexpected reply {line!r}")


def redis_client_list(url: str, timeout: float = 3.0) -> tuple[list[dict[str, str]], int]:
    u = urllib.parse.urlparse(url)
    if u.scheme not in ("redis", ""):
        raise ValueError(f"unsupported Redis URL scheme {u.scheme!r} for the health check")
    port = u.port or 6379
    with socket.create_connection((u.hostname or "127.0.0.1", port), timeout=timeout) as s:
        f = s.makefile("rb")
        if u.password:
            auth = (
                (urllib.parse.unquote(u.username), urllib.parse.unquote(u.password))
                if u.username
                else (urllib.parse.unquote(u.password),)
            )
            s.sendall(_resp_cmd("AUTH", *auth))
            _resp_read(f)
        s.sendall(_resp_cmd("CLIENT", "LIST"))
        text = _resp_read(f)
    clients = []
    for line in str(text).splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
        clients.append(fields)
    return clients, port


def _norm_ip(ip: str) -> str:
    ip = ip.strip("[]")
    return ip.removeprefix("::ffff:")


def local_connections(remote_port: int) -> set[tuple[str, int]]:
    """(local ip, local port) of this network namespace's established TCP connections to remote_port."""
    found: set[tuple[str, int]] = set()
    for name, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 4 or parts[3] != "01":  # 01 = ESTABLISHED
                continue
            (lhex, lport), (_, rport) = (p.split(":") for p in parts[1:3])
            if int(rport, 16) != remote_port:
                continue
            raw = bytes.fromhex(lhex)
            if v6:  # four little-endian 32-bit words
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                ip = socket.inet_ntop(socket.AF_INET6, raw)
            else:
                ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
            found.add((_norm_ip(ip), int(lport, 16)))
    return found


def check_bus() -> int:
    url = os.environ.get("JARVIS_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        clients, port = redis_client_list(url)
    except (OSError, ValueError, ConnectionError) as exc:
        return fail(f"redis at {url}: {exc}")
    mine = local_connections(port)
    working = []
    for c in clients:
        ip, _, p = c.get("addr", "").rpartition(":")
        if not p.isdigit() or (_norm_ip(ip), int(p)) not in mine:
            continue
        if c.get("cmd", "NULL") not in STARTUP_CMDS:
            working.append(c.get("cmd"))
    if working:
        print(f"ok: working on the bus ({', '.join(sorted(set(working)))})")
        return 0
    return fail(f"not working on the bus yet ({len(mine)} connection(s) to redis, none past start-up)")


# ---- which service is this? ---------------------------------------------------------


def service_argv() -> list[str] | None:
    me = os.getpid()
    for proc in sorted(Path("/proc").iterdir(), key=lambda p: (len(p.name), p.name)):
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv if a]
        if "-m" in argv:
            i = argv.index("-m")
            if i + 1 < len(argv) and argv[i + 1].startswith("services."):
                return argv[i + 1 :]
    return None


def check_auto() -> int:
    argv = service_argv()
    if argv is None:
        return fail("no `python -m services.*` process in this container")
    module = argv[0]
    if module == "services.gateway":
        return check_http(f"http://127.0.0.1:{os.environ.get('JARVIS_PORT', '8765')}/healthz")
    if module == "services.llm.llamacpp":
        port = argv[argv.index("--port") + 1] if "--port" in argv[:-1] else "8000"
        return check_http(f"http://127.0.0.1:{port}/openapi.json")  # /v1/models takes the model lock
    return check_bus()


def main(args: list[str]) -> int:
    if not args:
        return check_auto()
    if args[0] == "http" and len(args) == 2:
        return check_http(args[1])
    if args[0] == "bus":
        return check_bus()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
