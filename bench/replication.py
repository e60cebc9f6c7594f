"""What `WAIT 1 <ms>` costs on a write that must survive a Sentinel failover.

    python -m bench.replication [--writes 2000] [--out bench-results/replication.json]

A local primary and its replica (loopback). Each write is the size of a turn's hand-off (an LLM
job holding a history window, ~4 KB), sent as the bus sends it (one EVALSHA of the batched XADD
script); measured alone and followed by `WAIT 1 100` in the same round trip (a pipeline), one
write at a time, so the figure is the latency one awaited write adds. Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.provenance import tree_commit  # noqa: E402
from bench.stats import percentile  # noqa: E402
from jarvis.redis_topologies import primary_and_replica  # noqa: E402
from shared import redis_url  # noqa: E402
from shared.bus import _MULTI_XADD  # noqa: E402

PAYLOAD = b"x" * 4096


def measure(writes: int, wait_ms: int = 100) -> dict:
    with primary_and_replica() as (primary, _):
        r = redis_url.sync_client(f"redis://127.0.0.1:{primary.port}/0")
        try:
            script = r.register_script(_MULTI_XADD)
            script(keys=["warm"], args=[b"m", 100, PAYLOAD])

            def plain() -> None:
                script(keys=["jobs:llm"], args=[b"m", 10000, PAYLOAD])

            def waited() -> None:
                pipe = r.pipeline(transaction=False)
                script(keys=["jobs:llm"], args=[b"m", 10000, PAYLOAD], client=pipe)
                pipe.execute_command("WAIT", 1, wait_ms)
                acked = pipe.execute()[-1]
                if acked < 1:
                    raise RuntimeError("the replica did not acknowledge within the WAIT timeout")

            result: dict = {}
            for name, fn in (("xadd", plain), ("xadd+wait", waited), ("xadd (again)", plain)):
                samples = []
                for _ in range(writes):
                    t0 = time.perf_counter()
                    fn()
                    samples.append((time.perf_counter() - t0) * 1e6)
                result[name] = {
                    "p50_us": round(percentile(samples, 50) or 0, 1),
                    "p99_us": round(percentile(samples, 99) or 0, 1),
                    "mean_us": round(sum(samples) / len(samples), 1),
                }
        finally:
            r.close()
    return {
        "benchmark": "replication",
        "commit": tree_commit(),
        "writes": writes,
        "payload_bytes": len(PAYLOAD),
        "wait": f"WAIT 1 {wait_ms}",
        "results": result,
        "added_p50_us": round(result["xadd+wait"]["p50_us"] - result["xadd"]["p50_us"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replication", description=__doc__)
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--out", default="bench-results/replication.json")
    args = ap.parse_args(argv)
    report = measure(args.writes)
    text = json.dumps(report, indent=2)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
