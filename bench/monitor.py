"""CPU and memory of the stack's processes (psutil, by pid) and Prometheus scrapes.

`ProcMonitor` samples each process's CPU seconds (user + system) and RSS at `mark()`s and
in a background thread (for peak RSS); CPU share = CPU seconds delta / wall seconds.
Replicas of one service (`orchestrator-1`, `orchestrator-2`, ...) are summed under its name.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import psutil

from bench.stats import cpu_share


def role(name: str) -> str:
    """The service a process is a replica of: `orchestrator-2` -> `orchestrator`."""
    return re.sub(r"-\d+$", "", name)


@dataclass
class Mark:
    wall: float
    cpu: dict[str, float]
    rss: dict[str, int]


@dataclass
class ProcMonitor:
    pids: dict[str, int]
    interval: float = 0.5
    peak_rss: dict[str, int] = field(default_factory=dict)
    # (wall time, cores busy on the machine outside these processes) per interval
    others: list[tuple[float, float]] = field(default_factory=list)
    _prev: tuple[float, list[int], float] | None = None
    _procs: dict[str, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        for name, pid in self.pids.items():
            try:
                self._procs[name] = psutil.Process(pid)
            except psutil.Error:
                pass

    def _sample(self) -> tuple[dict[str, float], dict[str, int]]:
        cpu: dict[str, float] = {}
        rss: dict[str, int] = {}
        for name, proc in self._procs.items():
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    used, mem = t.user + t.system, proc.memory_info().rss
            except psutil.Error:
                continue
            key = role(name)
            cpu[key] = cpu.get(key, 0.0) + used
            rss[key] = rss.get(key, 0) + mem
        for key, mem in rss.items():
            self.peak_rss[key] = max(self.peak_rss.get(key, 0), mem)
        return cpu, rss

    def _other_load(self, cpu: dict[str, float]) -> None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(x) for x in f.readline().split()[1:]]
        except OSError:
            return
        now = time.time()
        ours = sum(cpu.values())
        if self._prev is not None:
            t0, prev, ours0 = self._prev
            d = [b - a for a, b in zip(prev, ticks, strict=False)]
            total = sum(d)
            if total > 0 and now > t0:
                busy = (os.cpu_count() or 1) * (total - d[3] - (d[4] if len(d) > 4 else 0)) / total
                self.others.append((now, max(0.0, busy - (ours - ours0) / (now - t0))))
        self._prev = (now, ticks, ours)

    def other_load(self, t0: float, t1: float) -> dict[str, float | None]:
        """Mean and max cores other work used while [t0, t1] (sampled every `interval`)."""
        xs = [v for t, v in self.others if t0 < t <= t1 + self.interval]
        if not xs:
            return {"mean": None, "max": None}
        return {"mean": round(sum(xs) / len(xs), 2), "max": round(max(xs), 2)}

    def mark(self) -> Mark:
        cpu, rss = self._sample()
        return Mark(time.time(), cpu, rss)

    def start(self) -> ProcMonitor:
        def run() -> None:
            while not self._stop.wait(self.interval):
                cpu, _ = self._sample()
                self._other_load(cpu)

        self._thread = threading.Thread(target=run, name="proc-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)

    @staticmethod
    def usage(a: Mark, b: Mark) -> dict[str, dict[str, float]]:
        """Per process: cores used between the marks, RSS at each (MiB)."""
        wall = max(1e-6, b.wall - a.wall)
        out: dict[str, dict[str, float]] = {}
        for name in b.cpu:
            if name not in a.cpu:
                continue
            out[name] = {
                "cpu_cores": round(cpu_share(a.cpu[name], b.cpu[name], wall), 3),
                "rss_mib_before": round(a.rss.get(name, 0) / (1 << 20), 1),
                "rss_mib_after": round(b.rss.get(name, 0) / (1 << 20), 1),
            }
        return out


def stack_pids(stack, include_self: bool = True) -> dict[str, int]:
    """Every process the Stack started (services, model servers, Redis), plus this one
    (the load generator)."""
    pids = {p.name: p.pid for p in stack.procs + stack.model_procs if p.pid}
    if stack.redis is not None and stack.redis.proc is not None:
        pids["redis"] = stack.redis.proc.pid
    if include_self:
        pids["loadgen"] = os.getpid()
    return pids


def _threads(pid: int) -> list[int]:
    """Every thread id of a process (the scheduler's settings are per thread on Linux)."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def renice(pids: dict[str, int], value: int) -> list[str]:
    """Set the nice value of every thread of these processes (Linux keeps it per thread).
    Returns the names it could not change (a negative value needs root)."""
    failed = []
    for name, pid in pids.items():
        tids = _threads(pid)
        try:
            for tid in tids:
                os.setpriority(os.PRIO_PROCESS, tid, value)
        except OSError:
            failed.append(name)
    return failed


def set_realtime(pids: dict[str, int], priority: int | None) -> list[str]:
    """Run every thread of these processes under SCHED_RR at `priority` (None: back to
    SCHED_OTHER). Threads created later inherit it. Needs root (CAP_SYS_NICE); returns the
    names it could not change. The kernel's RT throttling still leaves 5% to other work."""
    failed = []
    for name, pid in pids.items():
        tids = _threads(pid)
        try:
            for tid in tids:
                if priority is None:
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                else:
                    os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(priority))
        except OSError:
            failed.append(name)
    return failed


def busy_cores(seconds: float = 2.0) -> float | None:
    """Cores busy on the whole machine over `seconds` (from /proc/stat): what else is running."""

    def read() -> list[int]:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]

    try:
        a = read()
        time.sleep(seconds)
        b = read()
    except OSError:
        return None
    d = [y - x for x, y in zip(a, b, strict=False)]
    total = sum(d)
    if total <= 0:
        return None
    idle = d[3] + (d[4] if len(d) > 4 else 0)
    return round((os.cpu_count() or 1) * (total - idle) / total, 2)


# ---- Prometheus ------------------------------------------------------------------------------


def scrape(url: str, timeout: float = 2.0) -> dict[tuple[str, tuple], float]:
    """Every sample of one /metrics page: (name, sorted labels) -> value; {} if unreachable."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[tuple[str, tuple], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape_all(endpoints: dict[str, str]) -> dict[str, dict]:
    """Every endpoint's samples; a service's replicas are summed under its name."""
    out: dict[str, dict] = {}
    for name, url in endpoints.items():
        merged = out.setdefault(role(name), {})
        for key, value in scrape(url).items():
            merged[key] = merged.get(key, 0.0) + value
    return out


def histogram_delta(before: dict, after: dict, name: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative buckets [(le, count)] of histogram `name` observed between two scrapes."""
    want = set(labels.items())
    out: dict[float, float] = {}
    for (metric, lab), value in after.items():
        if metric != f"{name}_bucket":
            continue
        d = dict(lab)
        if not want <= set(d.items()):
            continue
        le = float(d["le"])
        out[le] = out.get(le, 0.0) + value - before.get((metric, lab), 0.0)
    return sorted(out.items())


def counter_delta(before: dict, after: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    total = 0.0
    for (metric, lab), value in after.items():
        if metric == name and want <= set(lab):
            total += value - before.get((metric, lab), 0.0)
    return total
