"""Local processes as model servers.

Each server is spawned with asyncio's subprocess API in its own session (so its own
process group: pgid == pid), its output appended to `<log_dir>/<model>.log`, with this
service's environment (less its Prometheus port) under the spec's `env`. Health is an
HTTP GET on `health_url` with backoff, or "running" when the spec has none. Stop sends
SIGTERM to the group, waits the grace period, then SIGKILL; everything is addressed by pid,
never by name. The pids are kept in a small state file so a restarted resource service can
adopt (or clean up) what the previous run left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from services.resource.config import ProcessSpec
from services.resource.runtimes.base import Handle, ProgressFn, StartFailed, render
from services.resource.runtimes.health import http_ok, wait_until
from services.resource.runtimes.sleep import HttpSleep

log = logging.getLogger(__name__)

METRICS_PORT_ENV = "JARVIS_METRICS_PORT"  # shared/config.py's `metrics_port`


def pid_alive(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def group_pids(pgid: int) -> set[int]:
    """Every live pid in process group `pgid` (a server and the children it spawned)."""
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid:
            out.add(int(entry.name))
    return out


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class ProcessRuntime(HttpSleep):
    kind = "process"

    def __init__(self, log_dir: Path, state_file: Path | None = None, health_request_timeout_s: float = 3.0):
        self.log_dir = Path(log_dir).expanduser()
        self.state_file = state_file
        self.health_request_timeout_s = health_request_timeout_s
        self._state: dict[str, dict] = {}  # model -> {pid, argv, started_at}

    # ---- state file ---------------------------------------------------------------

    def _read_state(self) -> dict[str, dict]:
        if self.state_file is None:
            return {}
        try:
            return json.loads(Path(self.state_file).read_text())
        except (OSError, ValueError):
            return {}

    def _write_state_sync(self, state: dict[str, dict]) -> None:
        if self.state_file is None:
            return
        path = Path(self.state_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    async def _save(self) -> None:
        await asyncio.to_thread(self._write_state_sync, dict(self._state))

    # ---- runtime interface --------------------------------------------------------

    async def base_url(self, handle: Handle, spec: ProcessSpec) -> str | None:
        if not spec.health_url:
            return None
        parts = urlsplit(spec.health_url)
        return f"{parts.scheme}://{parts.netloc}"

    async def start(
        self, model: str, spec: ProcessSpec, device: int, values: Mapping[str, str] | None = None
    ) -> Handle:
        # a Prometheus port is one process's: a server inheriting this service's would fail to
        # bind it (and exit); one that should serve metrics names its own port in `env`
        inherited = {k: v for k, v in os.environ.items() if k != METRICS_PORT_ENV}
        env = {**inherited, **spec.env}
        argv = list(render(spec.argv, values) or spec.argv)
        if "CUDA_VISIBLE_DEVICES" not in spec.env:
            env["CUDA_VISIBLE_DEVICES"] = str(device)  # the NVML index the planner chose,
            env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # numbered as NVML numbers them

        def open_log() -> int:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.log_dir / f"{model}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

        fd = await asyncio.to_thread(open_log)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=spec.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StartFailed(f"{model}: cannot run {spec.argv[0]!r}: {exc}") from exc
        finally:
            os.close(fd)
        log.info("started %s: pid %d: %s", model, proc.pid, " ".join(argv))
        self._state[model] = {"pid": proc.pid, "argv": argv, "started_at": time.time(), "device": device}
        await self._save()
        return Handle(model, self.kind, str(proc.pid), device, info={"pid": proc.pid}, obj=proc)

    async def alive(self, handle: Handle, spec: ProcessSpec | None = None) -> bool:
        proc = handle.obj
        if isinstance(proc, asyncio.subprocess.Process):
            return proc.returncode is None and pid_alive(proc.pid)
        return pid_alive(int(handle.ref))

    async def wait_healthy(
        self,
        handle: Handle,
        spec: ProcessSpec,
        timeout_s: float,
        progress: ProgressFn | None = None,
        expected_s: float = 10.0,
    ) -> None:
        async def probe() -> bool:
            if spec.health_url is None:
                return await self.alive(handle)
            return await http_ok(spec.health_url, self.health_request_timeout_s)

        await wait_until(
            probe,
            timeout_s=timeout_s,
            expected_s=expected_s,
            alive=lambda: self.alive(handle),
            progress=progress,
            what=f"{handle.model} (pid {handle.ref})",
        )

    async def probe(self, handle: Handle, spec: ProcessSpec) -> bool:
        """A full health probe (periodic health)."""
        if not await self.alive(handle):
            return False
        if spec.health_url is None:
            return True
        return await http_ok(spec.health_url, self.health_request_timeout_s)

    async def gpu_usage(self, handle: Handle, gpu: object) -> int | None:
        usage = await gpu.process_usage(handle.device)  # type: ignore[attr-defined]
        if usage is None:
            return None
        pids = await asyncio.to_thread(group_pids, int(handle.ref))
        return sum(usage.get(p, 0) for p in pids)

    async def stop(self, handle: Handle, grace_s: float) -> None:
        pid = int(handle.ref)
        proc = handle.obj if isinstance(handle.obj, asyncio.subprocess.Process) else None
        if await self.alive(handle):
            _signal_group(pid, signal.SIGTERM)
            if not await self._wait_gone(pid, proc, grace_s):
                log.warning("%s (pid %d) ignored SIGTERM for %.1fs: SIGKILL", handle.model, pid, grace_s)
                _signal_group(pid, signal.SIGKILL)
                if not await self._wait_gone(pid, proc, 10.0):
                    log.error("%s (pid %d) still there after SIGKILL", handle.model, pid)
        # stragglers of the group (children that outlived the leader)
        _signal_group(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 1.0)  # reap
        if self._state.get(handle.model, {}).get("pid") == pid:
            del self._state[handle.model]
            await self._save()

    @staticmethod
    async def _wait_gone(pid: int, proc: asyncio.subprocess.Process | None, timeout_s: float) -> bool:
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
                return True
            except TimeoutError:
                return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            await asyncio.sleep(0.05)
        return not pid_alive(pid)

    async def adopt(self) -> list[Handle]:
        """Processes recorded by a previous run that are still alive with the same argv."""
        state = await asyncio.to_thread(self._read_state)
        out: list[Handle] = []
        for model, rec in state.items():
            pid = int(rec.get("pid", 0))
            if pid > 0 and pid_alive(pid) and _cmdline(pid) == rec.get("argv"):
                out.append(
                    Handle(
                        model,
                        self.kind,
                        str(pid),
                        int(rec.get("device", 0)),
                        started_at=rec.get("started_at", time.time()),
                        adopted=True,
                        info={"pid": pid},
                    )
                )
                self._state[model] = rec
        await self._save()
        return out

    async def close(self) -> None:
        return None
