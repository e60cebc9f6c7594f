"""`jarvis models status|load|unload <model>`: the GPU and its models, through the resource service.

`status` prints the GPU as NVML sees it on this machine (name, memory) and, when a resource
service is running, what it has resident (awake, or asleep with the memory a sleeping server
still holds on the GPU), who holds what and when idle models expire;
without one it prints the configured registry with the footprints it would use.
`load` / `unload` ask the running resource service (a turn in progress keeps its models:
unload refuses a held model unless `--force`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

EXIT_NO_SERVICE = 3


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("models", help="GPU models: status, load, unload (via the resource service)")
    p.add_argument("--redis-url", default=None, help="default: JARVIS_REDIS_URL")
    msub = p.add_subparsers(dest="models_command", required=True)

    st = msub.add_parser("status", help="the GPU and the resident models")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=status)

    ld = msub.add_parser("load", help="load a model now (prewarm priority)")
    ld.add_argument("model")
    ld.set_defaults(func=load)

    ul = msub.add_parser("unload", help="unload a model")
    ul.add_argument("model")
    ul.add_argument("--force", action="store_true", help="even while a turn holds it")
    ul.set_defaults(func=unload)


async def _bus(args: argparse.Namespace, timeout_s: float = 3.0) -> Any:
    """A connected Bus, or None (message printed) when Redis cannot be reached."""
    from shared.bus import Bus
    from shared.config import get_settings

    settings = get_settings()
    url = args.redis_url or settings.redis_url
    bus = Bus(url, socket_timeout=max(settings.redis_socket_timeout, 5.0))
    try:
        await asyncio.wait_for(bus.redis.ping(), timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure: report and carry on without Redis
        print(f"redis at {url}: unreachable ({exc.__class__.__name__}: {exc})", file=sys.stderr)
        await bus.close()
        return None
    return bus


async def _local_gpus() -> tuple[list[Any], str]:
    """NVML's view from this machine, or ([], why not)."""
    from services.resource.gpu import GpuUnavailable, NvmlGpu

    try:
        gpu = await NvmlGpu().open()
    except GpuUnavailable as exc:
        return [], str(exc)
    try:
        return [await gpu.info(i) for i in range(await gpu.device_count())], ""
    finally:
        await gpu.close()


def _mib(v: Any) -> str:
    return "-" if v is None else f"{int(v):,} MiB"


def _print_gpus(gpus: list[Any], why: str) -> None:
    if not gpus:
        print(f"GPU: no NVIDIA GPU visible on this machine ({why})")
    for g in gpus:
        print(
            f"GPU {g.index}: {g.name}  total {_mib(g.total_mib)}  used {_mib(g.used_mib)}  "
            f"free {_mib(g.free_mib)}  (driver {g.driver})"
        )


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())


async def status(args: argparse.Namespace) -> int:
    from services.resource.client import ResourceClient

    gpus, why = await _local_gpus()
    bus = await _bus(args)
    replies = []  # one per resource service (GPU host), by id
    try:
        if bus is not None:
            client = ResourceClient(bus)
            for record in await client.services():
                reply = await client.status(record.service_id)
                if reply is not None:
                    replies.append(reply)
    finally:
        if bus is not None:
            await bus.close()
    if args.json:
        out: dict[str, Any] = {"local_gpus": [_gpu_dict(g) for g in gpus], "local_gpu_error": why}
        services = [
            {
                "service_id": reply.service_id,
                "gpus": reply.gpus,
                "residents": reply.residents,
                "holders": reply.holders,
                "models": reply.models,
            }
            for reply in replies
        ]
        if services:
            out["service"] = services[0]  # the first by id (one GPU host: the only one)
            out["services"] = services
        print(json.dumps(out, indent=2, default=str))
        return 0
    _print_gpus(gpus, why)
    if not replies:
        print("resource service: not running" + ("" if bus is not None else " (Redis unreachable)"))
        _print_registry()
        return 0
    for reply in replies:
        _print_service(reply)
    return 0


def _print_service(reply: Any) -> None:
    print(f"resource service: {reply.service_id}")
    for g in reply.gpus:
        if "error" in g:
            print(f"  GPU {g['index']}: {g['error']}")
            continue
        print(
            f"  GPU {g['index']} ({g['backend']}): {g['name']}  "
            f"available to models {_mib(g['available_mib'])} "
            f"(free {_mib(g['free_mib'])}, reserve {_mib(g['reserve_mib'])}), {g['queued']} request(s) queued"
            + (f"; sleeping models hold {_mib(g['sleeping_held_mib'])}" if g.get("sleeping_held_mib") else "")
        )
    if reply.residents:
        rows = [
            [
                r["model"],
                r["state"],
                _mib(r["footprint_mib"]),
                _mib(r["observed_mib"]),
                _mib(r["held_mib"]) if r.get("sleeping") else "-",
                r["group"],
                "sticky" if r["sticky"] else "",
                ", ".join(r["held_by"]) or "-",
                "-" if r["expires_in_s"] is None else f"{r['expires_in_s']:.0f}s",
            ]
            for r in reply.residents
        ]
        _print_table(
            rows,
            ["MODEL", "STATE", "FOOTPRINT", "OBSERVED", "ASLEEP HOLDS", "GROUP", "", "HELD BY", "EXPIRES"],
        )
    else:
        print("  no model resident")
    idle = sorted(set(reply.models) - {r["model"] for r in reply.residents})
    if idle:
        print("  not loaded: " + ", ".join(f"{m} ({_mib(reply.models[m]['footprint_mib'])})" for m in idle))


def _gpu_dict(g: Any) -> dict[str, Any]:
    return {
        k: getattr(g, k) for k in ("index", "name", "total_mib", "used_mib", "free_mib", "uuid", "driver")
    }


def _print_registry() -> None:
    from services.resource.calibration import Calibration, footprints
    from services.resource.config import ResourceSettings

    try:
        settings = ResourceSettings()
        registry = settings.load_registry()
    except Exception as exc:  # noqa: BLE001 - a bad registry is reported, not raised
        print(f"registry: cannot load ({exc})")
        return
    calib = Calibration.read(settings.calibration_file)
    fps = footprints(registry, calib, settings.calibration_margin_pct)
    rows = [
        [
            m,
            s.runtime.kind,
            _mib(fps[m]),
            "calibrated" if m in calib.models else "declared",
            registry.group_of(m),
            "sticky" if s.sticky else "",
        ]
        for m, s in registry.models.items()
    ]
    print("configured models:")
    _print_table(rows, ["MODEL", "RUNTIME", "FOOTPRINT", "SOURCE", "GROUP", ""])


@contextlib.asynccontextmanager
async def _service(args: argparse.Namespace):
    """A client of the running resource service, or None (after saying why)."""
    from services.resource.client import ResourceClient

    bus = await _bus(args)
    if bus is None:
        yield None
        return
    try:
        client = ResourceClient(bus)
        if not await client.available():
            print("resource service: not running", file=sys.stderr)
            yield None
        else:
            yield client
    finally:
        await bus.close()


async def load(args: argparse.Namespace) -> int:
    from services.resource.client import ResourceError

    async with _service(args) as client:
        if client is None:
            return EXIT_NO_SERVICE
        try:
            async for p in client.load(args.model):
                eta = f"  eta {p.eta_s:.0f}s" if p.state not in ("ready", "failed") else ""
                print(f"{p.model}: {p.state:<9} {p.progress * 100:3.0f}%{eta}  {p.message}".rstrip())
            print(f"{args.model}: resident")
            return 0
        except ResourceError as exc:
            print(f"{args.model}: {exc}", file=sys.stderr)
            return 1


async def unload(args: argparse.Namespace) -> int:
    from services.resource.client import ResourceError

    async with _service(args) as client:
        if client is None:
            return EXIT_NO_SERVICE
        try:
            done = await client.unload(args.model, force=args.force)
            print(f"{args.model}: {'unloaded' if done.evicted else done.error or 'not resident'}")
            return 0
        except ResourceError as exc:
            print(f"{args.model}: {exc}", file=sys.stderr)
            return 1
