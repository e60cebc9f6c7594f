"""One worker hop to the microsecond: a job's XADD to the worker's first result, for Jarvis's
worker and for the two floors under it, in this sitting.

    python -m bench.worker_hop [--jobs 300] [--gap-ms 20,2] [--out bench-results/worker_hop.json]

Scenario a's framework overhead is about five such hops (the gateway's frame to the
orchestrator, its job to the STT worker, the transcript's job to the LLM worker, the first
sentence to the TTS worker, the audio back to the gateway), and stream ids have 1 ms steps. Here
three workers serve `jobs:llm` on a fresh redis-server, one at a time, alone:

* **jarvis**: `python -m services.llm --stub`, the worker as bench a and b run it;
* **redis-py**: a loop of `XREADGROUP BLOCK` and two `XADD`s on `redis.asyncio` (the client
  library Jarvis uses, with nothing of ours around it);
* **bare RESP**: the same loop on an asyncio protocol with hiredis's packer and reader (what
  a lean client path for the hot commands could cost).

A client adds a spoken-reply `LlmJob` every 20 ms (the worker idles between jobs, as in a
conversation) and times each from its XADD to the first token read back with a blocking XREAD
on `in:{sid}`, then to the TTS job (that second read adds one round trip of the client's).
Then again with a job every 2 ms: the same code, kept warm. The difference is what idling costs
a hop (caches and the CPU's state after a pause; a voice turn's hops each follow one), and it
grows with the code a hop runs. Prints a table and writes JSON with the tree's commit and the
command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.provenance import stamp, write_result  # noqa: E402
from bench.stats import summarize  # noqa: E402

SID = "worker-hop"
GAPS_MS = (20.0, 2.0)  # between jobs: idle as in a conversation, then warm
WORKERS = ("jarvis", "redis-py", "bare RESP")


# ---- the two floors (run as `python -m bench.worker_hop --serve KIND --port N`) ------------


async def _serve_redis_py(port: int) -> None:
    import redis.asyncio as aioredis

    from shared.messages import in_stream, jobs_stream

    r = aioredis.Redis(port=port)
    await r.xgroup_create(jobs_stream("llm"), "bare", id="$", mkstream=True)
    await r.xgroup_createconsumer(jobs_stream("llm"), "bare", "c1")  # ready: the client waits for it
    while True:
        got = await r.xreadgroup("bare", "c1", {jobs_stream("llm"): ">"}, count=1, block=1000)
        for _stream, entries in got or []:
            for _eid, _fields in entries:
                await r.xadd(in_stream(SID), {"m": b"token"})
                await r.xadd(jobs_stream("tts"), {"m": b"tts job"})


class _Resp(asyncio.Protocol):
    """A bare RESP connection: commands packed by hiredis, replies parsed by its reader, in order."""

    def __init__(self) -> None:
        import hiredis

        self._pack = hiredis.pack_command
        self._reader = hiredis.Reader()
        self._waiting: list[asyncio.Future] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._waiting.pop(0).set_result(reply)

    def call(self, *args) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        assert self._transport is not None
        self._transport.write(self._pack(args))
        return fut


async def _serve_resp(port: int) -> None:
    from shared.messages import in_stream, jobs_stream

    loop = asyncio.get_running_loop()
    _, reads = await loop.create_connection(_Resp, "127.0.0.1", port)
    _, writes = await loop.create_connection(_Resp, "127.0.0.1", port)
    await writes.call("XGROUP", "CREATE", jobs_stream("llm"), "bare", "$", "MKSTREAM")
    await writes.call("XGROUP", "CREATECONSUMER", jobs_stream("llm"), "bare", "c1")
    while True:
        got = await reads.call(
            "XREADGROUP",
            "GROUP",
            "bare",
            "c1",
            "COUNT",
            "1",
            "BLOCK",
            "1000",
            "STREAMS",
            jobs_stream("llm"),
            ">",
        )
        if got:
            await writes.call("XADD", in_stream(SID), "*", "m", b"token")
            await writes.call("XADD", jobs_stream("tts"), "*", "m", b"tts job")


# ---- the client ---------------------------------------------------------------------------


async def _measure(port: int, jobs: int, warm: int, gap_s: float) -> dict:
    import redis.asyncio as aioredis

    from shared import codec
    from shared.messages import LlmJob, SpokenReply, epoch_key, in_stream, jobs_stream

    r = aioredis.Redis(port=port)
    try:
        deadline = time.monotonic() + 60
        while not any(g["consumers"] for g in await _groups(r)):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker never joined jobs:llm")
            await asyncio.sleep(0.1)
        await r.set(epoch_key(SID), 1)
        token_ms, tts_ms = [], []
        for i in range(warm + jobs):
            await asyncio.sleep(gap_s)
            since_in = (await r.xrevrange(in_stream(SID), count=1) or [(b"0-0", None)])[0][0]
            since_tts = (await r.xrevrange(jobs_stream("tts"), count=1) or [(b"0-0", None)])[0][0]
            job = LlmJob(
                SID, i, 1, [{"role": "user", "content": "what time is it"}], {}, time.time(), SpokenReply()
            )
            t0 = time.perf_counter()
            await r.xadd(jobs_stream("llm"), codec.entry(job))
            if not await r.xread({in_stream(SID): since_in}, count=1, block=2000):
                raise RuntimeError("no first token within 2 s")
            t1 = time.perf_counter()
            if not await r.xread({jobs_stream("tts"): since_tts}, count=1, block=2000):
                raise RuntimeError("no TTS job within 2 s")
            t2 = time.perf_counter()
            if i >= warm:
                token_ms.append((t1 - t0) * 1000)
                tts_ms.append((t2 - t0) * 1000)
        return {"first_token_ms": summarize(token_ms), "tts_job_ms": summarize(tts_ms)}
    finally:
        await r.aclose()


async def _groups(r) -> list[dict]:
    from redis.exceptions import ResponseError

    from shared.messages import jobs_stream

    try:
        return await r.xinfo_groups(jobs_stream("llm"))
    except ResponseError:  # no stream yet
        return []


def _worker_command(kind: str, port: int) -> list[str]:
    if kind == "jarvis":
        return [sys.executable, "-m", "services.llm", "--stub"]
    serve = "redis-py" if kind == "redis-py" else "resp"
    return [sys.executable, "-m", "bench.worker_hop", "--serve", serve, "--port", str(port)]


def run_one(kind: str, jobs: int, warm: int, gaps_ms: tuple[float, ...] = GAPS_MS) -> dict[str, dict]:
    """A fresh redis-server and one worker of `kind`, timed at each gap between jobs (keyed by the
    gap in ms); both stopped by pid, whatever happens."""
    from jarvis.redis_server import RedisServer

    with RedisServer() as redis:
        env = {**os.environ, "JARVIS_REDIS_URL": redis.url, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            _worker_command(kind, redis.port),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return {f"{g:g}": asyncio.run(_measure(redis.port, jobs, warm, g / 1000)) for g in gaps_ms}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def render(result: dict) -> str:
    head = (
        f"{'worker':<10} {'gap ms':>6}  {'first token p50':>15}  {'p95':>6}  {'p99':>6}  {'TTS job p50':>11}"
    )
    lines = [head, "-" * len(head)]
    for kind in WORKERS:
        for gap, r in result["by_gap"].get(kind, {}).items():
            t, s = r["first_token_ms"], r["tts_job_ms"]
            lines.append(
                f"{kind:<10} {gap:>6}  {t['p50']:>15.2f}  {t['p95']:>6.2f}  {t['p99']:>6.2f}  "
                f"{s['p50']:>11.2f}"
            )
    lines.append(f"  ms from the job's XADD to the result read back, {result['jobs']} jobs each")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.worker_hop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--warm", type=int, default=30)
    ap.add_argument(
        "--gap-ms", default=",".join(f"{g:g}" for g in GAPS_MS), help="gaps between jobs, ms (default 20,2)"
    )
    ap.add_argument("--out", default="bench-results/worker_hop.json")
    ap.add_argument("--serve", choices=["redis-py", "resp"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        import uvloop

        uvloop.run(_serve_redis_py(args.port) if args.serve == "redis-py" else _serve_resp(args.port))
        return 0
    gaps = tuple(float(g) for g in args.gap_ms.split(","))
    by_gap = {kind: run_one(kind, args.jobs, args.warm, gaps) for kind in WORKERS}
    result = {
        **stamp("bench.worker_hop", argv),
        "jobs": args.jobs,
        "by_gap": by_gap,
        # at the first gap (a conversation's idle pauses): the figures compared across trees
        "workers": {kind: runs[f"{gaps[0]:g}"] for kind, runs in by_gap.items()},
    }
    print(render(result))
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
