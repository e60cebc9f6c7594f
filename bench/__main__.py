"""`python -m bench [--scenario a,b,c,d,eot,bargein,pipecat] [--max-n 150] [--turns 6] ...` (`make bench`
runs a-d).

See docs/BENCHMARKS.md for what the figures mean and how they are measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.provenance import tree_commit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_STEPS = [10, 25, 50, 75, 100, 125, 150, 175, 200, 250, 300]
SCENARIOS = ("a", "b", "pipecat", "c", "d", "eot", "bargein", "faults", "soak")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--scenario",
        default="a,b,c,d",
        help="comma-separated: a (1 session, stub), b (density, stub), c (CPU profile), d (in-process), "
        "eot (end-of-turn strategies on a labelled corpus), bargein (talking over a reply; stub and CPU "
        "profiles), faults (a kill campaign), soak (a long run); the last four only when named",
    )
    ap.add_argument("--kills", type=int, default=102, help="faults: processes killed (default 102)")
    ap.add_argument("--fault-sessions", type=int, default=4, help="faults: sessions talking (default 4)")
    ap.add_argument("--soak-minutes", type=float, default=30.0, help="soak: how long (default 30)")
    ap.add_argument(
        "--soak-sessions",
        type=int,
        default=None,
        help="soak: sessions (default 80%% of the density bench-results/latest.json measured)",
    )
    ap.add_argument("--max-n", type=int, default=150, help="b: the largest N tried (default 150)")
    ap.add_argument(
        "--ns", help="b, pipecat: explicit comma-separated session counts (overrides the default steps)"
    )
    ap.add_argument("--turns", type=int, default=6, help="turns per session in b and c (default 6)")
    ap.add_argument(
        "--a-turns", type=int, default=20, help="turns of the single session in a and d (default 20)"
    )
    ap.add_argument(
        "--gap", type=float, default=1.5, help="seconds of silence after each question (default 1.5)"
    )
    ap.add_argument(
        "--end-silence-ms",
        type=float,
        default=None,
        help="end-of-turn silence given to the stack (default: JARVIS_TURN_END_SILENCE_MS or 288)",
    )
    ap.add_argument(
        "--end-of-turn",
        choices=["silence", "adaptive"],
        default="silence",
        help="c: the stack's end of turn: the plain silence rule every scenario uses (default, "
        "comparable across trees), or the adaptive one it ships with (pause transcripts)",
    )
    ap.add_argument(
        "--preemptive",
        choices=["on", "off"],
        default=None,
        help="c: start replies on pause transcripts (JARVIS_TURN_PREEMPTIVE; default: the profile's)",
    )
    ap.add_argument(
        "--late-tolerance",
        type=float,
        default=0.0,
        help="b: fraction of late (>100 ms) frames a step may have and still pass (default 0)",
    )
    ap.add_argument(
        "--orchestrators",
        type=int,
        default=None,
        help="orchestrator processes per stack (default: as `jarvis up`, one per core up to 4)",
    )
    ap.add_argument(
        "--keep-going", action="store_true", help="b, pipecat: run every step even after one falls behind"
    )
    ap.add_argument(
        "--refine",
        type=int,
        default=1,
        help="b, pipecat: bisection steps between the last N that kept up and the first that did not "
        "(default 1)",
    )
    ap.add_argument(
        "--c-profile",
        choices=["cpu", "gpu"],
        default="cpu",
        help="c: the real-model profile (default cpu; gpu on a GPU host after `jarvis calibrate`)",
    )
    ap.add_argument(
        "--baseline-sessions", type=int, default=50, help="d: sessions in lockstep for the CPU figure"
    )
    ap.add_argument(
        "--bargein-trials", type=int, default=10, help="bargein: trials per kind of sound (default 10)"
    )
    ap.add_argument(
        "--bargein-stt-delay",
        type=float,
        default=0.15,
        help="bargein: seconds the stub profile's STT takes per job (default 0.15, a GPU-class STT)",
    )
    ap.add_argument(
        "--bargein-profiles", default="stub,cpu", help="bargein: the profiles to run (default stub,cpu)"
    )
    ap.add_argument("--question", default=None, help="the spoken question (espeak-ng)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--out", default=str(ROOT / "bench-results"), help="where the JSON goes (default bench-results/)"
    )
    ap.add_argument(
        "--priority",
        type=int,
        default=None,
        help="renice the stack and the load generator to this value (e.g. -10; needs root): "
        "shields the figures from other work on a shared machine; default: leave as is",
    )
    ap.add_argument(
        "--realtime",
        type=int,
        default=None,
        metavar="PRIO",
        help="run the stack and the load generator under SCHED_RR at PRIO (e.g. 10; needs root) in "
        "the scenarios named by --realtime-scenarios: measures what the code costs when it gets "
        "the CPU on a machine others are using; default off",
    )
    ap.add_argument(
        "--realtime-scenarios",
        default="ad",
        help="where --realtime applies (default ad; b or c under SCHED_RR would starve the machine)",
    )
    ap.add_argument("--keep-logs", action="store_true", help="copy every stack's service logs under --out")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench import report
    from bench.audio import DEFAULT_QUESTION, load_clip
    from bench.bargein import render_bargein, scenario_bargein
    from bench.eot import render_eot, scenario_eot
    from bench.scenarios import Options, machine, scenario_a, scenario_b, scenario_c, scenario_d
    from jarvis.launcher import default_orchestrators
    from services.orchestrator.config import EndpointSettings
    from shared.vad import SileroVad

    wanted = [s.strip() for s in args.scenario.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SCENARIOS]
    if bad:
        print(f"unknown scenario(s) {bad}; pick from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    if os.environ.pop("JARVIS_REDIS_URL", None):
        print("bench: ignoring JARVIS_REDIS_URL; every stack gets its own embedded Redis", file=sys.stderr)
    out_dir = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    endpoint = EndpointSettings(
        **({"end_silence_ms": args.end_silence_ms} if args.end_silence_ms is not None else {})
    )
    opts = Options(
        turns=args.turns,
        a_turns=args.a_turns,
        gap_s=args.gap,
        end_silence_ms=endpoint.end_silence_ms,
        seed=args.seed,
        late_tolerance=args.late_tolerance,
        priority=args.priority,
        realtime=args.realtime,
        realtime_scenarios=args.realtime_scenarios,
        c_profile=args.c_profile,
        end_of_turn=args.end_of_turn,
        preemptive=None if args.preemptive is None else args.preemptive == "on",
        orchestrators=args.orchestrators or default_orchestrators(),
        keep_logs=out_dir / f"logs-{stamp}" if args.keep_logs else None,
    )
    try:
        clip = load_clip(args.question or DEFAULT_QUESTION, out_dir / "cache")
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    vad = SileroVad()
    if args.ns:
        ns = [int(x) for x in args.ns.split(",") if x.strip()]
    else:
        ns = [n for n in DEFAULT_STEPS if n <= args.max_n] or [args.max_n]
    res: dict = {
        "started": stamp,
        "commit": tree_commit(),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "config": {
            "scenarios": wanted,
            "ns": ns,
            "turns": args.turns,
            "a_turns": args.a_turns,
            "gap_s": args.gap,
            "end_silence_ms": endpoint.end_silence_ms,
            "question": clip.text,
            "question_s": round(clip.seconds, 3),
            "speech_end_sample": clip.speech_end,
            "late_tolerance": args.late_tolerance,
            "priority": args.priority,
            "realtime": args.realtime,
            "realtime_scenarios": args.realtime_scenarios,
            "c_profile": args.c_profile,
            "end_of_turn": args.end_of_turn,
            "preemptive": args.preemptive,
            "orchestrators": opts.orchestrators,
        },
        "targets": report.TARGETS,
        "pipecat_1_14": report.PIPECAT,
        "scenarios": {},
    }
    m = res["machine"]
    print(
        f"bench: {m['cpus']} CPUs ({m['cpu_model']}), load average {m['load_average_at_start']}, "
        f"{m['busy_cores_before_start']} cores busy before start, CPU speed {m['cpu_speed_ms']} ms; "
        f"question {clip.seconds:.2f} s, end silence {endpoint.end_silence_ms:.0f} ms; "
        f"{opts.orchestrators} orchestrator(s); scenarios {','.join(wanted)}",
        flush=True,
    )
    if (m.get("busy_cores_before_start") or 0) > 0.3:
        print(
            "bench: WARNING: the machine is busy with other work; latency and density figures will be "
            "pessimistic (see --realtime for the one-session scenarios)",
            flush=True,
        )
    t_all = time.monotonic()

    def log(msg: str) -> None:
        print(msg, flush=True)

    runs = {
        "a": (
            f"a: stub models, one session, {args.a_turns} turns ...",
            lambda: scenario_a(clip, opts, endpoint, vad),
            lambda r: report.render_load(r, "a) stub models, one session"),
        ),
        "b": (
            f"b: stub models, rising N {ns} ...",
            lambda: scenario_b(
                clip,
                opts,
                endpoint,
                vad,
                ns,
                keep_going=args.keep_going,
                refine=args.refine,
                log=log,
                baseline_sessions=args.baseline_sessions,
            ),
            report.render_b,
        ),
        "pipecat": (
            f"pipecat: Pipecat 1.14 in one process, stub models, rising N {ns} ...",
            lambda: _pipecat(clip, opts, endpoint, vad, ns, args, log),
            _render_pipecat,
        ),
        "c": (
            f"c: {args.c_profile} profile (real models), one session, {args.turns} turns ...",
            lambda: scenario_c(clip, opts, endpoint, vad),
            report.render_c,
        ),
        "d": (
            "d: in-process baseline ...",
            lambda: scenario_d(clip, opts, endpoint, vad, sessions=args.baseline_sessions),
            lambda r: report.render_d(r, res["scenarios"].get("a"), res["scenarios"].get("b")),
        ),
        "eot": (
            "eot: end-of-turn strategies on the labelled corpus (real Silero, Smart Turn, Whisper base) ...",
            lambda: scenario_eot(out_dir, endpoint, vad, log=log),
            render_eot,
        ),
        "bargein": (
            "bargein: talking over a reply (stub profile: cutting words; CPU profile: the decisions) ...",
            lambda: scenario_bargein(
                opts,
                out_dir,
                trials=args.bargein_trials,
                stub_stt_delay=args.bargein_stt_delay,
                profiles=tuple(x.strip() for x in args.bargein_profiles.split(",") if x.strip()),
                log=log,
            ),
            render_bargein,
        ),
        "faults": (
            f"faults: {args.kills} kills while {args.fault_sessions} sessions talk ...",
            lambda: _faults(clip, args),
            _render_faults,
        ),
        "soak": (
            f"soak: {args.soak_minutes:g} minutes ...",
            lambda: _soak(clip, args, opts, out_dir),
            _render_soak,
        ),
    }
    try:
        for key in SCENARIOS:
            if key not in wanted:
                continue
            intro, run, render = runs[key]
            log(intro)
            try:
                res["scenarios"][key] = run()
            except Exception as exc:  # noqa: BLE001 - one broken scenario never loses the others
                import traceback

                res["scenarios"][key] = {
                    "scenario": key,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
                log(f"{key}: ERROR {type(exc).__name__}: {exc}")
                continue
            log(render(res["scenarios"][key]))
    except KeyboardInterrupt:
        log("bench: interrupted; saving what was measured")
        res["interrupted"] = True
    res["elapsed_s"] = round(time.monotonic() - t_all, 1)
    res["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    log("")
    log(report.render_summary(res))
    path = report.save(res, out_dir)
    log(f"\nbench: {res['elapsed_s']:.0f} s; results in {path} (and {out_dir / 'latest.json'})")
    return 0


def _pipecat(clip, opts, endpoint, vad, ns: list[int], args: argparse.Namespace, log) -> dict:
    from bench.pipecat_anchor import scenario_pipecat

    return scenario_pipecat(
        clip, opts, endpoint, vad, ns, keep_going=args.keep_going, refine=args.refine, log=log
    )


def _render_pipecat(res: dict) -> str:
    from bench.pipecat_anchor import render_pipecat

    return render_pipecat(res)


def _faults(clip, args: argparse.Namespace) -> dict:
    from bench.faults import scenario_faults

    return scenario_faults(clip.samples, kills=args.kills, sessions=args.fault_sessions)


def _render_faults(res: dict) -> str:
    from bench.faults import render

    return render(res)


def _soak(clip, args: argparse.Namespace, opts, out_dir: Path) -> dict:
    from bench.soak import scenario_soak

    return scenario_soak(
        clip, minutes=args.soak_minutes, sessions=args.soak_sessions, opts=opts, results=out_dir
    )


def _render_soak(res: dict) -> str:
    from bench.soak import render

    return render(res)


if __name__ == "__main__":
    sys.exit(main())
