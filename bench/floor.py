"""The floor under scenario b: what the parts no design of ours can remove cost on this host.

    python -m bench.floor [--ns 25,50,100,200] [--seconds 10] [--out bench-results/floor.json]

Scenario b's sessions each send fifty 20 ms frames a second over a WebSocket and have 31.25
Silero windows a second scored. Whatever Jarvis does with them, three costs remain, and this
measures each alone, in this sitting:

* **receiving a frame** with the `websockets` library (a server whose handler only iterates
  the messages, uvloop, no compression): the least any Python WebSocket server pays per frame;
* **sending a frame** (the load generator's side: the same library, one process, N clients at
  real-time pace with random phases, as `bench/loadgen.py` sends them);
* **scoring a window** with the batched Silero model (`shared.vad.SileroVad`, N streams a call).

The floor at N sessions is N x (50 x (receive + send) + 31.25 x score) in cores: on a machine
where the load generator runs beside the stack, no session count whose floor passes the cores
(less 15% for the rest of the system) can keep up, however lean the stack between them is.
Prints a table and writes JSON (with the tree's commit and the command).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.provenance import tree_commit  # noqa: E402

FRAME_S = 0.02
FRAME = bytes(1 + 640)  # the audio tag and 20 ms of PCM16 at 16 kHz
WINDOWS_PER_S = 16000 / 512
HEADROOM = 0.85  # of the machine's cores, as scenario b's CPU-bound projection


def _run(coro_fn, *args) -> None:
    import uvloop

    uvloop.run(coro_fn(*args))


async def _server(port_q, result_q, warm_s: float, seconds: float) -> None:
    import websockets

    frames = 0

    async def handler(ws) -> None:
        nonlocal frames
        async for _ in ws:
            frames += 1

    async with websockets.serve(handler, "127.0.0.1", 0, compression=None) as server:
        port_q.put(server.sockets[0].getsockname()[1])
        await asyncio.sleep(warm_s)
        cpu, n, wall = time.process_time(), frames, time.monotonic()
        await asyncio.sleep(seconds)
        result_q.put(("server", time.process_time() - cpu, frames - n, time.monotonic() - wall))


async def _clients(port: int, n: int, result_q, warm_s: float, seconds: float) -> None:
    import websockets

    sent = 0
    stop = asyncio.Event()

    async def one() -> None:
        nonlocal sent
        async with websockets.connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            await asyncio.sleep(random.random() * FRAME_S)
            due = time.monotonic()
            while not stop.is_set():
                await ws.send(FRAME)
                sent += 1
                due += FRAME_S
                await asyncio.sleep(max(0.0, due - time.monotonic()))

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(warm_s)
    cpu, s0, wall = time.process_time(), sent, time.monotonic()
    await asyncio.sleep(seconds)
    result_q.put(("clients", time.process_time() - cpu, sent - s0, time.monotonic() - wall))
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


def websocket_cost(n: int, seconds: float) -> dict:
    """µs of CPU per 20 ms frame on each side, with `n` clients streaming at real-time pace."""
    ctx = mp.get_context("spawn")
    port_q, result_q = ctx.Queue(), ctx.Queue()
    warm = 2.0
    server = ctx.Process(target=_run, args=(_server, port_q, result_q, warm, seconds), daemon=True)
    server.start()
    clients = None
    try:
        port = port_q.get(timeout=30)
        clients = ctx.Process(target=_run, args=(_clients, port, n, result_q, warm, seconds), daemon=True)
        clients.start()
        got = {}
        for _ in range(2):
            name, cpu, frames, wall = result_q.get(timeout=seconds + 60)
            got[name] = {
                "cores": round(cpu / wall, 3),
                "frames_per_s": round(frames / wall, 1),
                "us_per_frame": round(1e6 * cpu / max(1, frames), 1),
            }
        return got
    finally:
        for proc in (clients, server):
            if proc is not None and proc.is_alive():
                proc.terminate()
                proc.join(5)
                if proc.is_alive():
                    proc.kill()


def silero_cost(n: int, calls: int = 0) -> dict:
    """µs of CPU per window, `n` streams scored in each batched call."""
    import numpy as np

    from shared.vad import SileroVad

    vad = SileroVad()
    streams = [vad.new_stream() for _ in range(n)]
    windows = (np.random.default_rng(0).standard_normal((n, 512)) * 3000).astype(np.int16)
    for _ in range(5):
        vad.process(streams, windows)
    calls = calls or max(20, 4000 // n)
    cpu = time.process_time()
    for _ in range(calls):
        vad.process(streams, windows)
    per_call = (time.process_time() - cpu) / calls
    return {"us_per_window": round(1e6 * per_call / n, 1), "ms_per_call": round(1e3 * per_call, 3)}


def measure(ns: list[int], seconds: float) -> dict:
    cores = os.cpu_count() or 1
    steps = []
    for n in ns:
        ws = websocket_cost(n, seconds)
        vad = silero_cost(n)
        per_session = (
            (1 / FRAME_S) * (ws["server"]["us_per_frame"] + ws["clients"]["us_per_frame"])
            + WINDOWS_PER_S * vad["us_per_window"]
        ) / 1e6
        steps.append(
            {
                "n": n,
                "receive": ws["server"],
                "send": ws["clients"],
                "silero": vad,
                "floor_cores_per_session": round(per_session, 5),
                "floor_cores": round(n * per_session, 3),
            }
        )
    largest = steps[-1]["floor_cores_per_session"]
    return {
        "benchmark": "floor",
        "commit": tree_commit(),
        "command": " ".join(["python -m bench.floor", *sys.argv[1:]]),
        "cpus": cores,
        "seconds": seconds,
        "steps": steps,
        "sessions_at_floor": int(HEADROOM * cores / largest) if largest else None,
    }


def render(report: dict) -> str:
    lines = [
        f"floor (commit {report['commit']}, {report['cpus']} CPUs): what receiving and sending a 20 ms "
        "frame and scoring a Silero window cost alone",
        f"{'N':>4}  {'recv us/frame':>13}  {'send us/frame':>13}  {'Silero us/window':>16}  "
        f"{'floor mcores/session':>20}  {'floor cores':>11}",
    ]
    for s in report["steps"]:
        lines.append(
            f"{s['n']:>4}  {s['receive']['us_per_frame']:>13}  {s['send']['us_per_frame']:>13}  "
            f"{s['silero']['us_per_window']:>16}  {1000 * s['floor_cores_per_session']:>20.2f}  "
            f"{s['floor_cores']:>11}"
        )
    lines.append(
        f"  at the largest N's cost per session, the floor alone fills {HEADROOM:.0%} of the "
        f"{report['cpus']} cores at {report['sessions_at_floor']} sessions "
        "(load generator on the same machine)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    ap.add_argument("--ns", default="25,50,100,200", help="comma-separated session counts")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per step")
    ap.add_argument("--out", default="bench-results/floor.json")
    args = ap.parse_args(argv)
    report = measure([int(x) for x in args.ns.split(",")], args.seconds)
    print(render(report))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
