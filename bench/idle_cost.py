"""What idling costs a fixed piece of the hot path: the gateway's Silero call on one window, timed
back to back and after each gap between calls.

    python -m bench.idle_cost [--calls 200] [--gap-ms 0,2,20] [--out bench-results/idle_cost.json]

Every hop of a voice turn runs after its process sat idle (the STT worker between turns, the
gateway between a client's frames), and on a shared host the caches and the CPU's state are not
what a tight loop finds. The same call, the same input: the time it takes after a 20 ms gap
against back to back is the idle penalty that every hop's code pays, in proportion to how much
code it runs (`bench.worker_hop` shows it for a whole worker hop). Prints a table and writes
JSON with the tree's commit and the command.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.provenance import stamp, write_result  # noqa: E402
from bench.stats import summarize  # noqa: E402

GAPS_MS = (0.0, 2.0, 20.0)


def measure(calls: int, gaps_ms: tuple[float, ...] = GAPS_MS, warm: int = 20) -> dict[str, dict]:
    """µs per Silero call on one stream's window (as the gateway makes it for one session), after
    each gap (keyed by the gap in ms)."""
    import numpy as np

    from shared.vad import WINDOW, SileroVad

    vad = SileroVad()
    stream = vad.new_stream()
    rng = np.random.default_rng(0)
    window = (rng.standard_normal((1, WINDOW)) * 3000).astype("<i2")
    out: dict[str, dict] = {}
    for gap in gaps_ms:
        took = []
        for i in range(warm + calls):
            if gap:
                time.sleep(gap / 1000)
            t = time.perf_counter()
            vad.process([stream], window)
            if i >= warm:
                took.append((time.perf_counter() - t) * 1e6)
        out[f"{gap:g}"] = summarize(took, digits=0)
    return out


def render(result: dict) -> str:
    head = f"{'gap ms':>6}  {'Silero call p50 us':>18}  {'p95 us':>7}  {'x back to back':>14}"
    lines = [head, "-" * len(head)]
    runs = result["silero_us"]
    base = next(iter(runs.values()))["p50"]
    for gap, r in runs.items():
        lines.append(f"{gap:>6}  {r['p50']:>18.0f}  {r['p95']:>7.0f}  {r['p50'] / base:>14.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.idle_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--gap-ms", default=",".join(f"{g:g}" for g in GAPS_MS), help="default 0,2,20")
    ap.add_argument("--out", default="bench-results/idle_cost.json")
    args = ap.parse_args(argv)
    gaps = tuple(float(g) for g in args.gap_ms.split(","))
    result = {
        **stamp("bench.idle_cost", argv),
        "calls": args.calls,
        "silero_us": measure(args.calls, gaps),
    }
    print(render(result))
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
