"""CPU and memory of the stack's processes (psutil, by pid) and Prometheus scrapes.

`ProcMonitor` samples each process's CPU seconds (user + system) and RSS at `mark()`s and
in a background thread (for peak RSS); CPU share = CPU seconds delta / wall seconds.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import psutil

from bench.stats import cpu_share


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
                    cpu[name] = t.user + t.system
                    rss[name] = proc.memory_info().rss
            except psutil.Error:
                continue
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss[name])
        return cpu, rss

    def mark(self) -> Mark:
        cpu, rss = self._sample()
        return Mark(time.time(), cpu, rss)

    def start(self) -> ProcMonitor:
        def run() -> None:
            while not self._stop.wait(self.interval):
                self._sample()

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


def renice(pids: dict[str, int], value: int) -> list[str]:
    """Set the nice value of every thread of these processes (Linux keeps it per thread).
    Returns the names it could not change (a negative value needs root)."""
    failed = []
    for name, pid in pids.items():
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            tids = [pid]
        try:
            for tid in tids:
                os.setpriority(os.PRIO_PROCESS, tid, value)
        except OSError:
            failed.append(name)
    return failed


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
    return {name: scrape(url) for name, url in endpoints.items()}


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
