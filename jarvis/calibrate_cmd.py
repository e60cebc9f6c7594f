"""`jarvis calibrate`: measure each model's GPU footprint with NVML and write the calibration file.

For every configured model (or the ones named), on an otherwise quiet GPU:
  used_before (settled) -> load the model -> one request of a realistic size -> settled,
  sampling NVML's used memory (and the server's own processes where NVML tells per process)
  all along -> footprint = peak - before.
The request matters: KV cache blocks, CUDA graphs, cuDNN/cuBLAS workspaces and allocator
growth arrive with the first inference, not at load, and a footprint measured without them
lets the planner admit a load that runs out of memory on the first turn.
A model with an in-process `adapter` ("module:Class", e.g. services.stt.whisper:WhisperStt)
is loaded in a fresh child process (`python -m jarvis.calibrate_cmd --hold-adapter ...`)
with its runtime's environment, so every measurement includes that process's own CUDA
context, exactly as the worker will have it; the child runs one request (5 s of audio for
speech-to-text, two sentences for text-to-speech). Any other model is started through its
registry runtime (Docker container or local process) and sent a long chat request once
healthy. The results are merged into the calibration JSON the resource service reads
(`JARVIS_RESOURCE_CALIBRATION_FILE`, default ~/.cache/jarvis/calibration.json); the
service adds `calibration_margin_pct` on top.

Without an NVIDIA GPU (NVML does not initialise) it says so and exits non-zero (2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT_NO_GPU = 2
READY_LINE = "JARVIS-CALIBRATE-LOADED"
INFERRED_LINE = "JARVIS-CALIBRATE-INFERRED"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate", help="measure each model's GPU footprint (NVML) and write the calibration file"
    )
    p.add_argument("models", nargs="*", help="models to measure (default: every model in the registry)")
    p.add_argument("--output", type=Path, default=None, help="default: JARVIS_RESOURCE_CALIBRATION_FILE")
    p.add_argument("--device", type=int, default=None, help="GPU index (default: JARVIS_RESOURCE_DEVICE)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds GPU memory must hold still to be read")
    p.add_argument("--timeout", type=float, default=900.0, help="per model: load + health")
    p.add_argument("--force", action="store_true", help="run even though a resource service is up")
    p.set_defaults(func=run)


async def settled_used(
    gpu: Any, device: int, settle_s: float, max_wait_s: float = 120.0, tolerance_mib: int = 16
) -> tuple[int, int]:
    """NVML used memory once it has changed by at most `tolerance_mib` for `settle_s`; (used, peak)."""
    start = time.monotonic()
    info = await gpu.info(device)
    last, peak, since = info.used_mib, info.used_mib, time.monotonic()
    while True:
        await asyncio.sleep(0.25)
        used = (await gpu.info(device)).used_mib
        peak = max(peak, used)
        if abs(used - last) > tolerance_mib:
            last, since = used, time.monotonic()
        elif time.monotonic() - since >= settle_s:
            return used, peak
        if time.monotonic() - start > max_wait_s:
            return used, peak


class PeakSampler:
    """NVML's used memory (and, per process, `own()`'s) sampled every `interval_s` until stopped."""

    def __init__(self, gpu: Any, device: int, own: Any = None, interval_s: float = 0.05):
        self.gpu, self.device, self.own, self.interval_s = gpu, device, own, interval_s
        self.peak_used = 0
        self.peak_own = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            self.peak_used = max(self.peak_used, (await self.gpu.info(self.device)).used_mib)
            if self.own is not None:
                mine = await self.own()
                if mine:
                    self.peak_own = max(self.peak_own, mine)
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> PeakSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _env_for(spec: Any, device: int) -> dict[str, str]:
    """The model's runtime environment, on the GPU being calibrated (numbered as NVML numbers it)."""
    spec_env = dict(getattr(spec.runtime, "env", {}) or {})
    env = {**os.environ, **spec_env}
    if "CUDA_VISIBLE_DEVICES" not in spec_env:
        env["CUDA_VISIBLE_DEVICES"] = str(device)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return env


async def _measure_adapter(model: str, spec: Any, device: int, gpu: Any, args: argparse.Namespace) -> dict:
    before, _ = await settled_used(gpu, device, args.settle)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jarvis.calibrate_cmd",
        "--hold-adapter",
        spec.adapter,
        env=_env_for(spec, device),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        async with PeakSampler(gpu, device) as sampler:
            async with asyncio.timeout(args.timeout):
                seen: set[str] = set()
                while INFERRED_LINE not in seen:
                    line = await proc.stdout.readline()
                    if not line:
                        await proc.wait()
                        stage = "running its warm-up request" if READY_LINE in seen else "loading"
                        raise RuntimeError(f"adapter process exited ({proc.returncode}) while {stage}")
                    seen.add(line.decode().strip())
            after, peak = await settled_used(gpu, device, args.settle)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the child unloads and exits at EOF
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    peak = max(peak, sampler.peak_used)
    return {
        "footprint_mib": max(0, peak - before),
        "settled_mib": max(0, after - before),
        "peak_mib": max(0, peak - before),
        "method": "adapter+inference",
    }


async def measure_runtime(
    model: str,
    spec: Any,
    device: int,
    gpu: Any,
    runtimes: Any,
    *,
    settle_s: float,
    timeout_s: float,
    stop_grace_s: float,
    footprint_mib: int,
) -> dict:
    """Start `model` through its runtime, send one realistic request, measure the peak, stop it."""
    from services.resource.runtimes.base import start_values

    rt = runtimes.for_kind(spec.runtime.kind)
    before, _ = await settled_used(gpu, device, settle_s)
    total = (await gpu.info(device)).total_mib
    handle = await rt.start(model, spec.runtime, device, start_values(footprint_mib, total, device))
    try:
        async with PeakSampler(gpu, device, lambda: rt.gpu_usage(handle, gpu)) as sampler:
            await rt.wait_healthy(handle, spec.runtime, timeout_s, None, spec.reload_cost_s)
            loaded, _ = await settled_used(gpu, device, settle_s)
            await asyncio.wait_for(rt.warm_up(handle, spec.runtime), timeout_s)
            after, peak = await settled_used(gpu, device, settle_s)
        peak = max(peak, sampler.peak_used)
    finally:
        await rt.stop(handle, stop_grace_s)
    # per process where NVML tells (other processes' changes do not count), else the device
    own = sampler.peak_own
    footprint = own if own else max(0, peak - before)
    return {
        "footprint_mib": footprint,
        "loaded_mib": max(0, loaded - before),
        "settled_mib": max(0, after - before),
        "peak_mib": max(0, peak - before),
        "method": f"runtime:{spec.runtime.kind}+inference",
    }


async def _measure_runtime(
    model: str, spec: Any, device: int, gpu: Any, args: argparse.Namespace, runtimes: Any, settings: Any
) -> dict:
    return await measure_runtime(
        model,
        spec,
        device,
        gpu,
        runtimes,
        settle_s=args.settle,
        timeout_s=args.timeout,
        stop_grace_s=settings.stop_grace_s,
        footprint_mib=spec.footprint_mib,
    )


async def _service_running(settings_redis_url: str, service_id: str) -> bool:
    """Is this host's resource service (`service_id`) running? (Another host's uses another GPU.)"""
    from services.resource import messages as m
    from shared.bus import Bus

    bus = Bus(settings_redis_url, socket_timeout=5)
    try:
        return bool(await asyncio.wait_for(bus.redis.exists(m.alive_key(service_id)), 2.0))
    except Exception:  # noqa: BLE001 - no Redis: no resource service either
        return False
    finally:
        await bus.close()


async def run(args: argparse.Namespace) -> int:
    from services.resource.calibration import Calibration, GpuRecord, Measurement
    from services.resource.config import ResourceSettings
    from services.resource.gpu import GpuUnavailable, NvmlGpu
    from services.resource.runtimes import RuntimeSet
    from services.resource.runtimes.docker import DockerRuntime
    from services.resource.runtimes.process import ProcessRuntime
    from shared.config import get_settings

    try:
        gpu = await NvmlGpu().open()
    except GpuUnavailable as exc:
        print(
            f"jarvis calibrate: no NVIDIA GPU here ({exc}); footprints can only be measured on a GPU "
            "host. Until then the resource service uses the registry's declared footprint_mib.",
            file=sys.stderr,
        )
        return EXIT_NO_GPU
    settings = ResourceSettings()
    device = settings.device if args.device is None else args.device
    output = await asyncio.to_thread(lambda: Path(args.output or settings.calibration_file).expanduser())
    try:
        if not args.force and await _service_running(get_settings().redis_url, settings.service_id):
            print(
                "jarvis calibrate: a resource service is running; its models would skew the numbers. "
                "Stop it first (or pass --force).",
                file=sys.stderr,
            )
            return 1
        registry = settings.load_registry()
        names = args.models or list(registry.models)
        unknown = [n for n in names if n not in registry.models]
        if unknown:
            print(f"jarvis calibrate: unknown model(s): {', '.join(unknown)}", file=sys.stderr)
            return 1
        info = await gpu.info(device)
        print(
            f"GPU {device}: {info.name}, {info.total_mib} MiB total, "
            f"{info.used_mib} MiB in use before calibrating"
        )
        runtimes = RuntimeSet(
            {
                "process": ProcessRuntime(settings.log_dir, None, settings.health_request_timeout_s),
                "docker": DockerRuntime(f"{settings.service_id}-calibrate"),
            }
        )
        calib = Calibration.read(output)
        calib.gpu = GpuRecord(name=info.name, total_mib=info.total_mib, driver=info.driver)
        failed = 0
        for name in names:
            spec = registry.models[name]
            print(f"{name}: loading ...", flush=True)
            try:
                if spec.adapter:
                    got = await _measure_adapter(name, spec, device, gpu, args)
                else:
                    got = await _measure_runtime(name, spec, device, gpu, args, runtimes, settings)
            except Exception as exc:  # noqa: BLE001 - one model failing must not stop the others
                failed += 1
                print(f"{name}: FAILED: {exc}", file=sys.stderr)
                continue
            calib.models[name] = Measurement(
                footprint_mib=got["footprint_mib"],
                method=got["method"],
                device=device,
                measured_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            )
            print(
                f"{name}: {got['footprint_mib']} MiB at its peak with a request (settled "
                f"{got.get('settled_mib', '-')} MiB; declared {spec.footprint_mib} MiB)"
            )
        await runtimes.close()
        calib.write(output)
        print(f"calibration written to {output}")
        return 1 if failed else 0
    finally:
        await gpu.close()


# ---- child mode: hold one adapter loaded until stdin closes ----------------------------


def warmup_request(module_name: str) -> Any:
    """A request of a realistic size for an adapter of this package (None: load only)."""
    from shared.model import SttRequest, TtsRequest

    if module_name.startswith("services.stt"):
        import numpy as np

        rng = np.random.default_rng(0)  # 5 s of quiet noise at 16 kHz: the encoder's full work
        pcm = (rng.normal(0, 300, 16000 * 5)).astype("<i2").tobytes()
        return SttRequest(pcm=pcm, sample_rate=16000)
    if module_name.startswith("services.tts"):
        return TtsRequest(
            text="Good evening. The weather tomorrow looks clear, with a light breeze from the west."
        )
    return None


async def _hold_adapter(target: str) -> int:
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    model = cls()
    res = model.load()
    if inspect.isawaitable(res):
        await res
    print(READY_LINE, flush=True)
    request = warmup_request(module_name)
    if request is not None:
        async for _ in model.infer(request):
            pass
    print(INFERRED_LINE, flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    res = model.unload()
    if inspect.isawaitable(res):
        await res
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jarvis.calibrate_cmd")
    ap.add_argument("--hold-adapter", required=True, help="module:Class to load and hold")
    args = ap.parse_args(argv)
    return asyncio.run(_hold_adapter(args.hold_adapter))


if __name__ == "__main__":
    sys.exit(main())
