"""Network namespaces as stand-in hosts, for tests that lose a whole host (needs root and
`ip netns`; `unavailable()` says why not, and such tests use loopback addresses instead).

Each namespace has only its own loopback: what runs in it listens there and nowhere else. Its
processes reach Redis through a Unix socket (namespaces share the file system, not the network),
and the test reaches a namespace's gateway through a socket made inside it (`connect`)."""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
import uuid

CLONE_NEWNET = 0x40000000


def unavailable() -> str | None:
    """Why namespaces can't be used here (None: they can)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no `ip` command"
    probe = f"jarvis-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Netns:
    def __init__(self, name: str) -> None:
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, capture_output=True)

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace (`ip netns exec` execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        """Every process in the namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def connect(self, host: str, port: int, timeout: float = 2.0) -> socket.socket:
        """A TCP connection made from inside the namespace (a socket keeps the namespace it was
        made in), from a thread of its own so the caller's namespace is untouched."""
        made: dict[str, socket.socket | BaseException] = {}

        def dial() -> None:
            try:
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                made["sock"] = socket.create_connection((host, port), timeout=timeout)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                made["error"] = exc

        t = threading.Thread(target=dial, name=f"dial-{self.name}")
        t.start()
        t.join()
        if "error" in made:
            raise made["error"]  # type: ignore[misc]
        sock = made["sock"]
        assert isinstance(sock, socket.socket)
        sock.settimeout(None)
        return sock

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
