"""`python -m bench --scenario soak [--soak-minutes 30] [--soak-sessions N]` (not in CI): a long
run at 80% of the density the last density run measured (bench-results/latest.json, scenario
b), every session asking question after question. Every process's RSS and Redis's
`used_memory` are sampled every 10 s; the report gives their least-squares slopes (a leak shows
as a slope that does not flatten) and whether every turn was answered."""

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
from shared import redis_url

SAMPLE_S = 10.0
DEFAULT_SESSIONS = 20  # when no density run is on file


def measured_density(results: Path) -> int | None:
    try:
        res = json.loads((results / "latest.json").read_text())
        return int(res["scenarios"]["b"]["density"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 3:
        return None
    t = np.array([p[0] for p in points])
    v = np.array([p[1] for p in points])
    return float(np.polyfit(t / 60.0, v, 1)[0])


async def _soak(stack: Stack, sessions: int, seconds: float, question: np.ndarray) -> dict:

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
    # the first minute is warm-up (caches, allocator pools): slopes are over the rest
    steady = {name: [p for p in pts if p[0] >= 60] or pts for name, pts in rss.items()}
    return {
        "scenario": "soak",
        "sessions": sessions,
        "minutes": round(seconds / 60, 1),
        "turns": len(turns),
        "completed": sum(t.outcome == "completed" for t in turns),
        "errors": sum(t.outcome == "error" for t in turns),
        "lost": sum(t.outcome == "lost" for t in turns),
        "rss_mib": {n: {"first": pts[0][1], "last": pts[-1][1]} for n, pts in rss.items() if pts},
        "rss_slope_mib_per_min": {n: _slope(pts) for n, pts in steady.items()},
        "redis_used_mib": {"first": redis_mem[0][1], "last": redis_mem[-1][1]} if redis_mem else {},
        "redis_slope_mib_per_min": _slope([p for p in redis_mem if p[0] >= 60] or redis_mem),
        "samples": len(redis_mem),
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
            res = asyncio.run(_soak(stack, sessions, minutes * 60, clip.samples))
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
        f"  {'process':<16}{'RSS first':>10}{'last':>8}{'slope MiB/min':>15}",
    ]
    for name, m in res["rss_mib"].items():
        lines.append(
            f"  {name:<16}{m['first']:>10.1f}{m['last']:>8.1f}{f(res['rss_slope_mib_per_min'][name]):>15}"
        )
    rm = res["redis_used_mib"]
    if rm:
        slope = f(res["redis_slope_mib_per_min"])
        lines.append(f"  {'redis used_memory':<16}{rm['first']:>10.1f}{rm['last']:>8.1f}{slope:>15}")
    return "\n".join(lines)
