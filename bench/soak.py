"""`python -m bench --scenario soak [--soak-minutes 30] [--soak-sessions N]` (not in CI): a long
run at 80% of the density the last density run measured (bench-results/latest.json, scenario
b), every session asking question after question. Every process's RSS and Redis's
`used_memory` are sampled every 10 s; the report gives their least-squares slopes over the steady
state (after the warm-up, and after the reply events Redis keeps for resumes have filled their
window) and over the run's second half (a leak shows as a slope that does not flatten), a
sample per minute, where Redis's memory sits at the end (by kind of key) and how much history the
sessions hold, and whether every turn was answered."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from bench.faults import TURN_TIMEOUT_S, Speaker
from bench.monitor import stack_pids
from jarvis.launcher import Stack
from jarvis.redis_server import free_port
from services.orchestrator.service import OUT_KEEP_S
from shared import redis_url

SAMPLE_S = 10.0
DEFAULT_SESSIONS = 20  # when no density run is on file
WARM_UP_S = 60.0  # caches, allocator pools
# Redis fills for this long before it can be flat: `out:{sid}` keeps OUT_KEEP_S of events and
# reply audio (how far back a resume reaches)
REDIS_FILL_S = OUT_KEEP_S + WARM_UP_S


def measured_density(results: Path) -> int | None:
    try:
        res = json.loads((results / "latest.json").read_text())
        return int(res["scenarios"]["b"]["density"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _after(points: list[tuple[float, float]], t: float) -> list[tuple[float, float]]:
    """The points from `t` on; all of them when fewer than three are that late (a short run)."""
    late = [p for p in points if p[0] >= t]
    return late if len(late) >= 3 else points


def _per_minute(points: list[tuple[float, float]]) -> list[list[float]]:
    """One (minute, value) point per minute: the series the JSON keeps."""
    out: list[list[float]] = []
    for t, v in points:
        if not out or t - out[-1][0] * 60 >= 60:
            out.append([round(t / 60, 2), round(v, 2)])
    return out


async def _redis_by_kind(r) -> dict[str, float]:
    """MiB Redis holds per kind of key (`in`, `out`, `jobs`, ...: the name before its first
    colon), from MEMORY USAGE of every key."""
    kinds: dict[str, float] = {}
    async for key in r.scan_iter(count=500):
        kind = key.decode(errors="replace").split(":", 1)[0]
        used = await r.memory_usage(key, samples=0) or 0
        kinds[kind] = kinds.get(kind, 0.0) + used / 2**20
    return {k: round(v, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}


def _history_mib(sessions_dir: Path) -> float:
    """The size of the session files: the history the orchestrators hold in memory too."""
    return sum(f.stat().st_size for f in sessions_dir.rglob("*") if f.is_file()) / 2**20


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 3:
        return None
    t = np.array([p[0] for p in points])
    v = np.array([p[1] for p in points])
    return float(np.polyfit(t / 60.0, v, 1)[0])


async def _soak(
    stack: Stack, sessions: int, seconds: float, question: np.ndarray, sessions_dir: Path
) -> dict:

    speakers = [Speaker(stack.url, i, question) for i in range(sessions)]
    for s in speakers:
        await s.connect()
    mics = [asyncio.create_task(s.mic()) for s in speakers]
    stop = asyncio.Event()
    talks = [asyncio.create_task(s.converse(stop, pause_s=1.5)) for s in speakers]
    r = redis_url.async_client(stack.redis_url)
    pids = stack_pids(stack, include_self=False)
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    rss: dict[str, list[tuple[float, float]]] = {name: [] for name in procs}
    redis_mem: list[tuple[float, float]] = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            now = time.monotonic() - t0
            for name, proc in procs.items():
                try:
                    rss[name].append((now, proc.memory_info().rss / 2**20))
                except psutil.Error:
                    pass
            info = await r.info("memory")
            redis_mem.append((now, info["used_memory"] / 2**20))
            await asyncio.sleep(SAMPLE_S)
        redis_by_kind = await _redis_by_kind(r)
    finally:
        stop.set()
        await asyncio.wait(talks, timeout=TURN_TIMEOUT_S + 5)
        for t in mics + talks:
            t.cancel()
        await asyncio.gather(*mics, *talks, return_exceptions=True)
        for s in speakers:
            if s.ws is not None:
                await s.ws.close()
        await r.aclose()
    turns = [t for s in speakers for t in s.turns if t.ended is not None or t.outcome == "lost"]
    # the last question of each session may have been cut by the end of the run: not counted
    turns = [t for t in turns if t.ended is not None or t.asked < t0 + seconds - TURN_TIMEOUT_S]
    half = seconds / 2
    return {
        "scenario": "soak",
        "sessions": sessions,
        "minutes": round(seconds / 60, 1),
        "turns": len(turns),
        "completed": sum(t.outcome == "completed" for t in turns),
        "errors": sum(t.outcome == "error" for t in turns),
        "lost": sum(t.outcome == "lost" for t in turns),
        "rss_mib": {n: {"first": pts[0][1], "last": pts[-1][1]} for n, pts in rss.items() if pts},
        "rss_slope_mib_per_min": {n: _slope(_after(pts, WARM_UP_S)) for n, pts in rss.items()},
        "rss_second_half_slope_mib_per_min": {n: _slope(_after(pts, half)) for n, pts in rss.items()},
        "redis_used_mib": {"first": redis_mem[0][1], "last": redis_mem[-1][1]} if redis_mem else {},
        "redis_slope_mib_per_min": _slope(_after(redis_mem, REDIS_FILL_S)),
        "redis_second_half_slope_mib_per_min": _slope(_after(redis_mem, half)),
        "redis_mib_by_kind": redis_by_kind,
        "history_mib": round(_history_mib(sessions_dir), 2),
        "samples": len(redis_mem),
        "per_minute": {
            "rss_mib": {n: _per_minute(pts) for n, pts in rss.items()},
            "redis_used_mib": _per_minute(redis_mem),
        },
    }


def scenario_soak(clip, minutes: float, sessions: int | None, opts, results: Path) -> dict:
    density = measured_density(results)
    if sessions is None:
        sessions = max(1, int(0.8 * density)) if density else DEFAULT_SESSIONS
    with tempfile.TemporaryDirectory(prefix="jarvis-soak-") as tmp:
        stack = Stack(
            profile="stub",
            port=free_port(),
            workdir=Path(tmp),
            orchestrators=opts.orchestrators,
            env={"JARVIS_TURN_END_SILENCE_MS": str(opts.end_silence_ms)},
        )
        stack.start(timeout=180)
        stack.watch()
        try:
            res = asyncio.run(_soak(stack, sessions, minutes * 60, clip.samples, Path(tmp) / "sessions"))
        finally:
            stack.stop()
    res["density_measured"] = density
    res["sessions_from"] = (
        "--soak-sessions" if density is None or sessions != max(1, int(0.8 * density)) else "80% of density"
    )
    return res


def render(res: dict) -> str:
    if "error" in res:
        return f"soak: ERROR {res['error']}"

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:+.3f}"

    lines = [
        f"soak: {res['minutes']} min, {res['sessions']} sessions ({res['sessions_from']}; density on file "
        f"{res['density_measured']}): {res['turns']} turns, {res['completed']} answered, "
        f"{res['errors']} errors, {res['lost']} lost",
        f"  {'process':<18}{'RSS first':>10}{'last':>8}{'slope MiB/min':>15}{'2nd half':>10}",
    ]
    half = res.get("rss_second_half_slope_mib_per_min", {})
    for name, m in res["rss_mib"].items():
        lines.append(
            f"  {name:<18}{m['first']:>10.1f}{m['last']:>8.1f}"
            f"{f(res['rss_slope_mib_per_min'][name]):>15}{f(half.get(name)):>10}"
        )
    rm = res["redis_used_mib"]
    if rm:
        slope = f(res["redis_slope_mib_per_min"])
        second = f(res.get("redis_second_half_slope_mib_per_min"))
        lines.append(
            f"  {'redis used_memory':<18}{rm['first']:>10.1f}{rm['last']:>8.1f}{slope:>15}{second:>10}"
            f"   (slope after the first {REDIS_FILL_S / 60:.0f} min: events kept for resumes fill first)"
        )
    if res.get("redis_mib_by_kind"):
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in res["redis_mib_by_kind"].items())
        lines.append(f"  Redis at the end, MiB by key: {kinds}")
    if "history_mib" in res:
        lines.append(f"  history held (session files): {res['history_mib']:.1f} MiB")
    return "\n".join(lines)
