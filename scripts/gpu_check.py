"""The GPU check behind scripts/gpu-check.sh: the resource service's planner against a real GPU.

With an NVIDIA GPU (NVML, and torch with CUDA) it plans with NVML's figures and starts
process-runtime model servers that really take CUDA memory (scripts/gpu_standin.py: a known
footprint, part of it only on the first request, vLLM's sleep endpoints). Without one, or
with --simulated, it runs the same steps on the simulated GPU and runtime. Steps:

1. never overcommit, eviction order: two servers of 40% of the free memory each fit, a third
   evicts the least recently used one; a server a holder pins is never evicted;
2. sleep/wake: a sleep-capable server is put to sleep (not stopped) to make room, what it still
   holds is measured (NVML per process) and counted, a request wakes it; the swap (evict +
   wake + warm-up) must come within 1.5 s of the wake itself;
3. stage timeout: a cold load longer than a 2 s stage timeout reports progress (with an ETA)
   more often than that, which is what keeps the waiting turn alive in the orchestrator;
4. `jarvis calibrate`'s measurement: with its realistic request it finds the memory a server
   takes on its first request, which a measurement right after load misses.

Writes <out>/gpu-check.json and <out>/gpu-check.md (a table for docs/BENCHMARKS.md); exit
status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jarvis.calibrate_cmd import measure_runtime  # noqa: E402
from services.resource.config import Registry, ResourceSettings  # noqa: E402
from services.resource.gpu import Gpu, GpuUnavailable, NvmlGpu, SimulatedGpu  # noqa: E402
from services.resource.host import SimulatedHostMemory  # noqa: E402
from services.resource.housekeeping import Housekeeper  # noqa: E402
from services.resource.planner import Planner  # noqa: E402
from services.resource.progress import Progress  # noqa: E402
from services.resource.runtimes import RuntimeSet  # noqa: E402
from services.resource.runtimes.process import ProcessRuntime  # noqa: E402
from services.resource.runtimes.simulated import SimulatedRuntime  # noqa: E402

STAGE_TIMEOUT_S = 2.0  # the check's stand-in for the orchestrator's stage timeout
SWAP_MARGIN_S = 1.5  # the goal: a swap within this of the wake itself
SIMULATED_MIB = 24576


@dataclass
class Step:
    name: str
    ok: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def real_gpu_available() -> str:
    """'' when NVML and torch with CUDA are both there, else why not."""
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 -- any reason means: no GPU to check
        return f"NVML: {exc}"
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; assert torch.cuda.is_available()"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return "" if probe.returncode == 0 else f"torch with CUDA: {probe.stderr.strip().splitlines()[-1:]}"


class Sampler:
    """NVML used memory every 20 ms: the peak must never pass the total."""

    def __init__(self, gpu: Gpu):
        self.gpu, self.peak, self.total = gpu, 0, 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            info = await self.gpu.info(0)
            self.peak, self.total = max(self.peak, info.used_mib), info.total_mib
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Check:
    def __init__(self, simulated: bool, workdir: Path):
        self.simulated = simulated
        self.workdir = workdir
        self.gpu: Gpu
        self.sim_runtime: SimulatedRuntime | None = None

    async def open(self) -> dict[str, Any]:
        if self.simulated:
            self.gpu = SimulatedGpu(SIMULATED_MIB, foreign_mib=300, name="Simulated GPU")
        else:
            self.gpu = await NvmlGpu().open()
        info = await self.gpu.info(0)
        self.free = info.free_mib
        self.reserve = 512
        # each server takes 40% of what is free: two fit, a third needs an eviction
        self.unit = int(0.4 * (info.free_mib - self.reserve))
        self.ctx = 0 if self.simulated else 600  # a torch process's own CUDA context, roughly
        return {
            "name": info.name,
            "total_mib": info.total_mib,
            "free_mib": info.free_mib,
            "driver": info.driver,
            "backend": self.gpu.backend,
        }

    def model(
        self,
        base: int,
        grow: int = 0,
        held: int = 0,
        start_s: float = 0.0,
        sleep: bool = False,
        reload_cost_s: float = 5.0,
    ) -> dict[str, Any]:
        footprint = base + grow + self.ctx
        spec: dict[str, Any] = {"footprint_mib": footprint, "reload_cost_s": reload_cost_s}
        if self.simulated:
            spec["runtime"] = {
                "kind": "simulated",
                "ready_fraction": base / footprint,
                "start_s": start_s,
                "sleep_held_mib": max(1, held + self.ctx // 2) if sleep else 1024,
                "wake_s": 0.3,
            }
        else:
            port = free_port()
            spec["runtime"] = {
                "kind": "process",
                "argv": [
                    sys.executable,
                    str(ROOT / "scripts" / "gpu_standin.py"),
                    "--port",
                    str(port),
                    "--base-mib",
                    str(base),
                    "--grow-mib",
                    str(grow),
                    "--held-mib",
                    str(held),
                    "--start-s",
                    str(start_s),
                ],
                "health_url": f"http://127.0.0.1:{port}/health",
            }
        if sleep:
            spec["sleep"] = {
                "level": 1,
                "held_mib": held + self.ctx + 512,
                "host_mib": base + grow,
                "wake_s": 1.0,
            }
        return spec

    def planner(self, models: dict[str, dict[str, Any]]) -> tuple[Planner, Housekeeper]:
        registry = Registry.model_validate({"models": models})
        settings = ResourceSettings(
            registry=registry,
            gpu_backend="simulated" if self.simulated else "nvml",
            reserve_mib=self.reserve,
            busy_wait_s=0.0,
            release_wait_s=20.0,
            health_timeout_s=120.0,
            stop_grace_s=5.0,
            keep_alive_s=3600.0,
            log_dir=self.workdir / "logs",
            host_reserve_mib=2048,
        )
        fps = {m: s.footprint_mib for m, s in registry.models.items()}
        host = None
        if self.simulated:
            self.sim_runtime = SimulatedRuntime(self.gpu, lambda m: fps[m], 262144)  # type: ignore[arg-type]
            runtimes = RuntimeSet({"simulated": self.sim_runtime})
            host = SimulatedHostMemory(lambda: self.sim_runtime.host_free_mib)  # type: ignore[union-attr]
        else:
            runtimes = RuntimeSet({"process": ProcessRuntime(self.workdir / "logs", None)})
        p = Planner(registry, fps, self.gpu, runtimes, settings, host=host)
        return p, Housekeeper(p)

    async def request(self, p: Planner, model: str) -> None:
        """A first real request to a resident server (it takes the memory it grows by)."""
        r = p.residents[model]
        assert r.handle is not None
        await p.runtimes.for_kind(r.handle.kind).warm_up(r.handle, p.spec(model).runtime)

    # ---- the steps ------------------------------------------------------------------

    async def eviction(self) -> Step:
        step = Step("never overcommit; evict the least recently used; never a held model")
        u = self.unit
        p, _ = self.planner(
            {"a": self.model(u), "b": self.model(int(u * 0.6), int(u * 0.4) - self.ctx), "c": self.model(u)}
        )
        sampler = Sampler(self.gpu)
        sampler.start()
        try:
            await p.ensure(["a"], "turn", "h1")
            await p.ensure(["b"], "turn", "h2")
            await self.request(p, "b")  # b grows to its full footprint on its first request
            p.release("h1")
            await asyncio.sleep(0.05)
            p.release("h2")  # b released last: a is the least recently used
            first = await p.ensure(["c"], "turn", "h3")
            p.acquire("h2", ["b"])  # a turn holds b
            p.release("h3")
            second = await p.ensure(["a"], "turn", "h4")
            step.details = {
                "unit_mib": u,
                "first_evicted": first.evicted,
                "second_evicted": second.evicted,
                "peak_used_mib": sampler.peak,
                "total_mib": sampler.total,
            }
            step.ok = (
                first.evicted == ["a"]
                and second.evicted == ["c"]
                and sampler.peak <= sampler.total
                and "b" in p.residents
            )
            if self.simulated:
                step.details["overcommits"] = list(self.gpu.overcommits)  # type: ignore[attr-defined]
                step.ok = step.ok and not self.gpu.overcommits  # type: ignore[attr-defined]
        finally:
            await sampler.stop()
            await p.stop_all()
        return step

    async def sleep_wake(self) -> Step:
        step = Step("sleep instead of stop; held memory counted; swap within 1.5 s of the wake")
        u = self.unit
        held = 256
        p, _ = self.planner(
            {"s": self.model(u, sleep=True, held=held), "a": self.model(u), "b": self.model(u)}
        )
        try:
            await p.ensure(["s"], "turn", "t1")
            await self.request(p, "s")
            p.release("t1")
            made_room = await p.ensure(["a", "b"], "turn", "t2")  # s must make room: it sleeps
            asleep = p.residents.get("s")
            held_measured = asleep.observed_mib if asleep else -1
            st = await p.status()
            row: dict[str, Any] = next((r for r in st["residents"] if r["model"] == "s"), {})
            p.release("t2")
            t0 = time.perf_counter()
            swap = await p.ensure(["s"], "turn", "t3")  # evicts a or b, wakes s, warms it up
            swap_s = time.perf_counter() - t0
            # the wake alone: put s to sleep again and time its runtime's wake + warm-up
            r = p.residents["s"]
            p.release("t3")
            async with p.lock(0).hold():
                await p.sleep(r, "measuring the wake")
                assert r.handle is not None
                t1 = time.perf_counter()
                await p.runtimes.for_kind(r.handle.kind).wake(r.handle, p.spec("s").runtime, True)
                wake_s = time.perf_counter() - t1
                r.state = "ready"
            step.details = {
                "slept": made_room.slept,
                "held_mib_measured": held_measured,
                "status_shows_sleeping": bool(row.get("sleeping")),
                "status_held_mib": row.get("held_mib"),
                "woken": swap.woken,
                "swap_evicted": swap.evicted,
                "swap_s": round(swap_s, 3),
                "wake_s": round(wake_s, 3),
            }
            step.ok = (
                made_room.slept == ["s"]
                and 0 < held_measured < u
                and bool(row.get("sleeping"))
                and swap.woken == ["s"]
                and swap.started == []
                and swap_s <= wake_s + SWAP_MARGIN_S
            )
        finally:
            await p.stop_all()
        return step

    async def stage_timeout(self) -> Step:
        step = Step(
            f"a cold load longer than a {STAGE_TIMEOUT_S:.0f} s stage timeout reports progress more often"
        )
        p, _ = self.planner(
            {"slow": self.model(512, start_s=3 * STAGE_TIMEOUT_S, reload_cost_s=3 * STAGE_TIMEOUT_S)}
        )
        times: list[float] = []
        etas: list[float] = []

        async def sink(pr: Progress) -> None:
            times.append(time.monotonic())
            if pr.state in ("starting", "loading"):
                etas.append(pr.eta_s)

        try:
            t0 = time.monotonic()
            await p.ensure(["slow"], "turn", "t", progress=sink)
            load_s = time.monotonic() - t0
            gaps = [b - a for a, b in zip([t0, *times], times, strict=False)]
            step.details = {
                "load_s": round(load_s, 2),
                "reports": len(times),
                "max_gap_s": round(max(gaps), 3),
                "first_eta_s": etas[0] if etas else None,
            }
            step.ok = load_s > STAGE_TIMEOUT_S and max(gaps) < STAGE_TIMEOUT_S and bool(etas) and etas[0] > 0
        finally:
            await p.stop_all()
        return step

    async def calibrate(self) -> Step:
        step = Step("jarvis calibrate: footprint includes what the first request takes")
        base, grow = self.unit // 4, self.unit // 4
        p, _ = self.planner({"g": self.model(base, grow)})
        spec = p.spec("g")
        got = await measure_runtime(
            "g",
            spec,
            0,
            self.gpu,
            p.runtimes,
            settle_s=1.0,
            timeout_s=120,
            stop_grace_s=5.0,
            footprint_mib=spec.footprint_mib,
        )
        step.details = {"base_mib": base, "grow_mib": grow, **got}
        step.ok = got["footprint_mib"] >= base + grow and got["footprint_mib"] > got["loaded_mib"]
        return step


async def run(simulated: bool, out: Path) -> dict[str, Any]:
    why = "" if simulated else real_gpu_available()
    if why:
        print(f"gpu-check: no usable GPU here ({why}): running on the simulated GPU", flush=True)
        simulated = True
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    check = Check(simulated, out)
    t0 = time.monotonic()
    report: dict[str, Any] = {
        "mode": "simulated" if simulated else "nvml",
        "no_gpu_reason": why,
        "host": platform.node(),
        "python": platform.python_version(),
        "commit": _commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report["gpu"] = await check.open()
    steps = []
    for fn in (check.eviction, check.sleep_wake, check.stage_timeout, check.calibrate):
        t = time.monotonic()
        try:
            step = await asyncio.wait_for(fn(), 150)
        except Exception as exc:  # noqa: BLE001 -- a step that raises failed; the others still run
            step = Step(fn.__name__, False, error=f"{type(exc).__name__}: {exc}")
        step.details["elapsed_s"] = round(time.monotonic() - t, 2)
        steps.append(step)
        print(
            f"{'PASS' if step.ok else 'FAIL'}  {step.name}  {json.dumps(step.details)} {step.error}",
            flush=True,
        )
    await check.gpu.close()
    report["steps"] = [asdict(s) for s in steps]
    report["ok"] = all(s.ok for s in steps)
    report["elapsed_s"] = round(time.monotonic() - t0, 2)
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu-check.md").write_text(table(report))
    return report


def table(report: dict[str, Any]) -> str:
    g = report["gpu"]
    lines = [
        f"GPU check, {report['mode']} ({g['name']}, {g['total_mib']} MiB), commit {report['commit']}, "
        f"{report['started_at']}, `scripts/gpu-check.sh`",
        "",
        "| step | result | figures |",
        "|---|---|---|",
    ]
    for s in report["steps"]:
        figures = ", ".join(f"{k} {v}" for k, v in s["details"].items())
        lines.append(f"| {s['name']} | {'pass' if s['ok'] else 'FAIL ' + s['error']} | {figures} |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/gpu-check.sh")
    ap.add_argument("--simulated", action="store_true", help="the simulated GPU even where a real one is")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "gpu-check")
    args = ap.parse_args()
    os.environ.setdefault("JARVIS_LOG_LEVEL", "WARNING")
    try:
        report = asyncio.run(run(args.simulated, args.out))
    except GpuUnavailable as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 2
    print(
        f"gpu-check: {'all steps passed' if report['ok'] else 'FAILED'} in {report['elapsed_s']} s; "
        f"report in {args.out}/gpu-check.json",
        flush=True,
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
