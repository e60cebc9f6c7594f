"""CPU, memory and scheduler counters of the stack's processes (psutil and /proc, by pid),
Redis's own counters (`INFO`), and Prometheus scrapes.

`ProcMonitor` samples each process's CPU seconds (user + system) and RSS at `mark()`s and
in a background thread (for peak RSS); CPU share = CPU seconds delta / wall seconds.
Replicas of one service (`orchestrator-1`, `orchestrator-2`, ...) are summed under its name
in `usage`; `activity` keeps each replica apart.

Scheduler counters (Linux) are summed over a process's live threads at each mark:
voluntary and involuntary context switches (`/proc/PID/task/TID/status`), and from
`/proc/PID/task/TID/schedstat` the run periods (times a thread was put on a CPU) and the
time its threads were runnable but waiting for a CPU. Every voluntary switch is a sleep
that ends in a wakeup, so voluntary switches per second are the wakeups per second (the
kernel's own `nr_wakeups` needs schedstats, which this kernel does not expose). A thread
that exits between two marks drops out of the sum (its counts are not in /proc anymore).
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import psutil

from bench.stats import cpu_share, per_second


def role(name: str) -> str:
    """The service a process is a replica of: `orchestrator-2` -> `orchestrator`."""
    return re.sub(r"-\d+$", "", name)


@dataclass(frozen=True)
class Sched:
    """Scheduler counters of one process, summed over its live threads."""

    voluntary: int = 0  # context switches: the thread slept (and was woken later)
    involuntary: int = 0  # context switches: the thread was preempted while runnable
    run_periods: int = 0  # times a thread was put on a CPU
    wait_s: float = 0.0  # seconds threads were runnable but waiting for a CPU
    threads: int = 0


def parse_ctxt(status: str) -> tuple[int, int]:
    """(voluntary, involuntary) context switches from a /proc/.../status text."""
    vol = re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M)
    inv = re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", status, re.M)
    return (int(vol.group(1)) if vol else 0, int(inv.group(1)) if inv else 0)


def parse_schedstat(text: str) -> tuple[int, int, int]:
    """(ns on a CPU, ns waiting for a CPU, run periods) from a /proc/.../schedstat line."""
    parts = text.split()
    if len(parts) < 3:
        raise ValueError(f"not a schedstat line: {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def read_sched(pid: int) -> Sched | None:
    """The scheduler counters of every live thread of `pid`, summed; None if it is gone."""
    vol = inv = periods = threads = 0
    wait_ns = 0
    for tid in _threads(pid):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/status") as f:
                v, i = parse_ctxt(f.read())
            with open(f"{base}/schedstat") as f:
                _, w, p = parse_schedstat(f.read())
        except (OSError, ValueError):
            continue  # the thread exited meanwhile
        vol, inv, periods, wait_ns, threads = vol + v, inv + i, periods + p, wait_ns + w, threads + 1
    if not threads:
        return None
    return Sched(vol, inv, periods, wait_ns / 1e9, threads)


@dataclass
class Mark:
    wall: float
    cpu: dict[str, float]
    rss: dict[str, int]
    # per process, replicas apart: CPU seconds and scheduler counters (marks only)
    proc_cpu: dict[str, float] = field(default_factory=dict)
    sched: dict[str, Sched] = field(default_factory=dict)


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

    def _sample(self, own: dict[str, float] | None = None) -> tuple[dict[str, float], dict[str, int]]:
        cpu: dict[str, float] = {}
        rss: dict[str, int] = {}
        for name, proc in self._procs.items():
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    used, mem = t.user + t.system, proc.memory_info().rss
            except psutil.Error:
                continue
            if own is not None:
                own[name] = used
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
        own: dict[str, float] = {}
        cpu, rss = self._sample(own)
        sched = {name: s for name, pid in self.pids.items() if (s := read_sched(pid)) is not None}
        return Mark(time.time(), cpu, rss, own, sched)

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

    @staticmethod
    def activity(a: Mark, b: Mark, sessions: int) -> dict[str, dict[str, float | int | None]]:
        """Per process (replicas apart) between the marks: cores, cores per session,
        context switches, wakeups and run periods per second (also per session), and the
        cores' worth of time its threads waited for a CPU."""
        wall = max(1e-6, b.wall - a.wall)
        out: dict[str, dict[str, float | int | None]] = {}
        for name in sorted(b.proc_cpu):
            if name not in a.proc_cpu:
                continue
            cores = cpu_share(a.proc_cpu[name], b.proc_cpu[name], wall)
            row: dict[str, float | int | None] = {
                "cpu_cores": round(cores, 4),
                "cores_per_session": round(cores / sessions, 5) if sessions > 0 else None,
            }
            s0, s1 = a.sched.get(name), b.sched.get(name)
            if s0 is not None and s1 is not None:
                vol = per_second(s0.voluntary, s1.voluntary, wall)
                row.update(
                    voluntary_cs_per_s=round(vol, 1),
                    involuntary_cs_per_s=round(per_second(s0.involuntary, s1.involuntary, wall), 1),
                    wakeups_per_s=round(vol, 1),
                    wakeups_per_s_per_session=round(vol / sessions, 2) if sessions > 0 else None,
                    run_periods_per_s=round(per_second(s0.run_periods, s1.run_periods, wall), 1),
                    runqueue_wait_cores=round(per_second(s0.wait_s, s1.wait_s, wall), 4),
                    threads=s1.threads,
                )
            out[name] = row
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


# ---- Redis's own counters (INFO) -------------------------------------------------------------


@dataclass(frozen=True)
class RedisSample:
    """What Redis says about itself at one moment (`INFO everything`, as redis-py parses it)."""

    wall: float
    used_memory: int  # bytes the allocator holds for data (streams, keys, client buffers)
    used_memory_rss: int
    commands: int  # total_commands_processed (commands run inside scripts included)
    cpu_s: float  # used_cpu_user + used_cpu_sys (all of Redis's threads)
    calls: dict[str, tuple[int, int]]  # command -> (calls, usec), from commandstats

    @classmethod
    def from_info(cls, info: dict, wall: float) -> RedisSample:
        calls = {
            key.removeprefix("cmdstat_"): (int(v.get("calls", 0)), int(v.get("usec", 0)))
            for key, v in info.items()
            if key.startswith("cmdstat_") and isinstance(v, dict)
        }
        return cls(
            wall=wall,
            used_memory=int(info.get("used_memory", 0)),
            used_memory_rss=int(info.get("used_memory_rss", 0)),
            commands=int(info.get("total_commands_processed", 0)),
            cpu_s=float(info.get("used_cpu_user", 0.0)) + float(info.get("used_cpu_sys", 0.0)),
            calls=calls,
        )


def redis_sample(url: str) -> RedisSample | None:
    """One `INFO everything` of the Redis at `url`; None if it does not answer."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return RedisSample.from_info(client.info("everything"), time.time())
    except redis.RedisError:
        return None
    finally:
        client.close()


def redis_usage(
    a: RedisSample, b: RedisSample, sessions: int, idle: RedisSample | None = None, top: int = 8
) -> dict:
    """Redis between two samples: cores (its own CPU counters), commands per second (and per
    session), CPU per command, the busiest commands, and the data memory it grew by from
    `idle` (before the sessions connected; default `a`) to `b`, per session. The INFO calls
    themselves are among the commands."""
    idle = idle or a
    wall = max(1e-6, b.wall - a.wall)
    cores = per_second(a.cpu_s, b.cpu_s, wall)
    cmds = per_second(a.commands, b.commands, wall)
    per = max(1, sessions)
    busiest = []
    for name, (calls, usec) in b.calls.items():
        c0, u0 = a.calls.get(name, (0, 0))
        if calls - c0 > 0:
            busiest.append((usec - u0, name, calls - c0))
    busiest.sort(reverse=True)
    return {
        "info_cpu_cores": round(cores, 4),
        "commands_per_s": round(cmds, 1),
        "commands_per_s_per_session": round(cmds / per, 2),
        "cpu_us_per_command": round(1e6 * cores / cmds, 2) if cmds > 0 else None,
        "used_memory_mib_idle": round(idle.used_memory / (1 << 20), 2),
        "used_memory_mib_after": round(b.used_memory / (1 << 20), 2),
        "used_memory_mib_per_session": round((b.used_memory - idle.used_memory) / per / (1 << 20), 4),
        "rss_mib_after": round(b.used_memory_rss / (1 << 20), 1),
        "commands": [
            {
                "command": name,
                "calls_per_s": round(calls / wall, 1),
                "calls_per_s_per_session": round(calls / wall / per, 3),
                "usec_per_call": round(usec / calls, 2),
                "cpu_share": round(usec / 1e6 / wall, 4),  # cores spent in this command
            }
            for usec, name, calls in busiest[:top]
        ],
    }


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
