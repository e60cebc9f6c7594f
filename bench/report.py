"""Tables on screen and the JSON file under bench-results/."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from bench.stats import slope

TARGETS = {
    "framework_p50_ms": 10,
    "framework_p99_ms": 30,
    "density_sessions": 100,
    "mib_per_session": 2.0,
}
# Pipecat 1.14 on the same kind of machine (2 cores), from the issue; scenario pipecat measures it
PIPECAT = {
    "framework_p50_ms": 25,
    "framework_p99_ms": 41,
    "overhead_p50_ms": 45,
    "overhead_p99_ms": 99,
    "sessions_one_process": 9,
    "sessions_process_per_session": 10,
    "mib_per_session": 10,
}


# Redis runs commands on one thread: one instance is one core at most, and its queueing delay
# (every hop of every session waits behind it) grows steeply as that core fills. Plan a second
# Redis (or Cluster, issue 18) when the projected load passes this share of a core.
REDIS_CORE_BUDGET = 0.7


@dataclass(frozen=True)
class RedisStep:
    """What one step of b measured of Redis."""

    sessions: int
    cores: float  # Redis's CPU over the streaming (user + system) / wall seconds
    commands_per_s: float
    mib_per_session: float | None = None  # INFO used_memory growth / N
    kept_up: bool = True  # the step's verdict: a step that fell behind delivered less than real time


def redis_capacity(steps: list[RedisStep], budget: float = REDIS_CORE_BUDGET) -> dict | None:
    """How many sessions one Redis core carries, and from how many a second Redis (or Cluster)
    is needed, from b's steps. With two or more steps the cost is split into a marginal part
    per session (least-squares slope against N) and a fixed part (intercept: the services'
    polling with no sessions); with one step all of it is counted per session (pessimistic).
    Two readings of the same measurement: by CPU (cores per session), and by commands (the
    commands per second one core runs at the measured CPU per command, over the commands per
    second a session needs). Only steps that kept up count: one that fell behind moved less than
    its N sessions' audio. If none kept up, the smallest step alone is used (the nearest to real
    time, all of its cost per session) and the result says so (`from_steps_that_fell_behind`)."""
    steps = [s for s in steps if s.sessions > 0]
    if not steps:
        return None
    behind = not any(s.kept_up for s in steps)
    steps = [min(steps, key=lambda s: s.sessions)] if behind else [s for s in steps if s.kept_up]
    xs = [float(s.sessions) for s in steps]
    cores = [s.cores for s in steps]
    cmds = [s.commands_per_s for s in steps]

    def fit(ys: list[float]) -> tuple[float, float]:
        k = slope(xs, ys) if len(steps) >= 2 else None
        if k is None or k <= 0:  # one step, or no growth to fit: all of it per session
            big = max(range(len(xs)), key=lambda i: xs[i])
            return ys[big] / xs[big], 0.0
        return k, max(0.0, sum(ys) / len(ys) - k * sum(xs) / len(xs))

    per, fixed = fit(cores)
    cmd_per, cmd_fixed = fit(cmds)
    if per <= 0 or cmd_per <= 0:
        return None
    us_per_command = 1e6 * sum(cores) / sum(cmds) if sum(cmds) > 0 else None
    commands_per_core = 1e6 / us_per_command if us_per_command else None
    by_cpu = max(0.0, (1.0 - fixed) / per)
    at_budget = max(0.0, (budget - fixed) / per)
    mibs = [s.mib_per_session for s in steps if s.mib_per_session is not None]
    mib = max(mibs) if mibs else None
    return {
        "from_steps": [s.sessions for s in steps],
        "from_steps_that_fell_behind": behind,
        "cores_per_session": round(per, 6),
        "fixed_cores": round(fixed, 4),
        "commands_per_s_per_session": round(cmd_per, 2),
        "fixed_commands_per_s": round(cmd_fixed, 1),
        "cpu_us_per_command": None if us_per_command is None else round(us_per_command, 2),
        "commands_per_s_one_core": None if commands_per_core is None else round(commands_per_core),
        "sessions_per_core_by_cpu": _whole(by_cpu),
        "sessions_per_core_by_commands": (
            _whole(max(0.0, (commands_per_core - cmd_fixed) / cmd_per)) if commands_per_core else None
        ),
        "core_budget": budget,
        "second_redis_beyond_sessions": _whole(at_budget),
        "mib_per_session": mib,
        "used_memory_mib_at_that": None if mib is None else round(mib * _whole(at_budget), 1),
    }


def _whole(x: float) -> int:
    """Whole sessions that fit (floor), not one less for a float's last bit."""
    return math.floor(x + 1e-9)


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)))
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))
            )
        )
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def _dist_row(name: str, s: dict | None, target: str = "") -> list:
    s = s or {}
    return [name, s.get("n"), s.get("p50"), s.get("p95"), s.get("p99"), s.get("max"), target]


DIST_HEADERS = ["figure (ms)", "n", "p50", "p95", "p99", "max", "target / Pipecat 1.14"]


def render_load(r: dict, title: str, fw_label: str = "framework overhead") -> str:
    if "error" in r:
        return f"{title}\n  ERROR: {r['error']}" + "".join(
            f"\n  --- {k}\n{v}" for k, v in (r.get("logs") or {}).items()
        )
    out = [
        table(
            DIST_HEADERS,
            [
                _dist_row(
                    fw_label,
                    r["framework_ms"],
                    "p50<=10 p99<=30 / 25, 41" if fw_label == "framework overhead" else "",
                ),
                _dist_row("overhead (- end silence)", r["overhead_ms"], "- / 45, 99"),
                _dist_row("  of which VAD + endpointing", r.get("vad_delay_ms")),
                _dist_row("voice-to-voice", r["voice_to_voice_ms"]),
                _dist_row("decision-frame lag", r["decision_lag_ms"], "late = >100"),
                _dist_row("loadgen pacing lateness", r["loadgen_pacing_late_ms"]),
            ],
            title,
        )
    ]
    out.append(
        f"  turns: {r['questions']} questions, {r['expected_turns']} expected, {r['missed_turns']} missed, "
        f"{r['false_turns']} false, {r['barge_ins']} barge-ins; decision frames late: "
        f"{r['late_decision_frames']}/{r['decision_frames']}"
        + (
            f"; orchestrator frames late: {int(r['orchestrator_frames_over_100ms'])}"
            f"/{int(r['orchestrator_frames'])}"
            if r.get("orchestrator_frames")
            else "; per-frame lag: not exposed by this build"
        )
        + (
            f"; gateway out entries >100 ms: {int(r['gateway_out_over_100ms'])}"
            f"/{int(r['gateway_out_entries'])}"
            if r.get("gateway_out_entries")
            else ""
        )
    )
    if r.get("hops"):
        h = r["hops"]
        rows = [
            [k, v.get("p50"), v.get("p95"), v.get("max"), h["cumulative_ms"][k].get("p50"), v["what"]]
            for k, v in h["span_ms"].items()
        ]
        out.append(
            table(
                ["hop", "span p50", "p95", "max", "cum. p50", "what"],
                rows,
                f"  hop by hop (ms, from Redis stream ids, 1 ms resolution; {h['turns']} turns)",
            )
        )
    out.append(render_procs(r))
    ol = r.get("other_load_cores") or {}
    if ol.get("mean") is not None:
        out.append(
            f"  other work on the machine meanwhile: {ol['mean']} cores on average, {ol['max']} at most"
        )
    out.append(
        f"  memory per session (gateway+orchestrator RSS growth / N): {r['mib_per_session']} MiB"
        + (f"; redis {r['redis_mib_per_session']} MiB" if r.get("redis_mib_per_session") is not None else "")
    )
    v = r.get("verdict")
    if v:
        out.append(
            f"  verdict: {'keeps up' if v['ok'] else 'FALLS BEHIND'}"
            + (f" ({'; '.join(v['reasons'])})" if v["reasons"] else "")
        )
    return "\n".join(out)


def render_procs(r: dict) -> str:
    rows = [
        [name, u["cpu_cores"], u["rss_mib_idle"], u["rss_mib_after"], u["rss_mib_peak"]]
        for name, u in sorted(r.get("processes", {}).items())
    ]
    rows.append(["stack total (no loadgen)", r.get("stack_cpu_cores"), None, None, None])
    return table(["process", "cores", "RSS idle MiB", "RSS loaded MiB", "peak MiB"], rows)


def step_head(cores: list[str]) -> list[str]:
    """The columns of a rising-N table (b, pipecat): latency, verdict inputs, then `cores`."""
    lat = ["N", "fw p50", "fw p99", "ovh p50", "ovh p99", "late", "miss/false"]
    return [*lat, *cores, "other cores", "MiB/sess", "verdict"]


def step_row(s: dict, cores: list) -> list:
    """One step of a rising-N table, in `step_head`'s columns."""
    return [
        s["sessions"],
        s["framework_ms"]["p50"],
        s["framework_ms"]["p99"],
        s["overhead_ms"]["p50"],
        s["overhead_ms"]["p99"],
        f"{s['late_decision_frames']}/{s['decision_frames']}",
        f"{s['missed_turns']}/{s['false_turns']}",
        *cores,
        (s.get("other_load_cores") or {}).get("mean"),
        s["mib_per_session"],
        "ok" if s["verdict"]["ok"] else "FALLS BEHIND",
    ]


def render_b(b: dict) -> str:
    if "steps" not in b:
        return "b) ERROR: " + b.get("error", "?")
    rows = []
    for s in b["steps"]:
        if "error" in s:
            rows.append(
                [
                    s["sessions"],
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    "error: " + s["error"][:60],
                ]
            )
            continue
        p = s["processes"]
        cores = [p.get("gateway", {}).get("cpu_cores"), p.get("orchestrator", {}).get("cpu_cores")]
        rows.append(step_row(s, [*cores, s["stack_cpu_cores"]]))
    t = table(step_head(["gw cores", "orch cores", "stack cores"]), rows, "b) stub models, rising N (ms)")
    return (
        t
        + f"\n  density: {b['density']} sessions keep up"
        + (f" (first failing N: {b['first_failing_n']})" if b.get("first_failing_n") else " (no step failed)")
        + f"; target >= {TARGETS['density_sessions']}"
        + "; Pipecat 1.14 (from the issue, not measured here): 9 in one process, 10 with a process per "
        "session (`--scenario b,pipecat` measures it in the same sitting)"
        + (
            "\n  memory per session, slope of gateway+orchestrator RSS over N: "
            f"{b['mib_per_session_slope']} MiB"
            f" (redis: {b.get('redis_mib_per_session_slope')} MiB)"
            if b.get("mib_per_session_slope") is not None
            else ""
        )
        + (
            "\n  CPU-bound projection for an idle machine (rough): "
            f"{b['cpu_projection']['sessions']} sessions "
            f"({b['cpu_projection']['cores_per_session']} cores per extra session incl. load generator, "
            f"{b['cpu_projection']['fixed_cores']} fixed, from N={b['cpu_projection']['from_steps']}; "
            f"{b['cpu_projection']['cores']} cores less 15%)"
            if b.get("cpu_projection")
            else ""
        )
        + _b_hops(b)
        + "\n"
        + render_b_processes(b)
        + "\n"
        + render_b_redis(b)
    )


def render_b_processes(b: dict) -> str:
    """Per process (replicas apart) at each N: CPU per session, context switches and wakeups
    per second, run-queue wait; the in-process baseline's CPU per session beside them."""
    base = (b.get("baseline") or {}).get("cores_per_session")
    rows = []
    for s in b.get("steps", []):
        act = s.get("activity") or {}
        total = sum(float(v.get("cpu_cores") or 0) for k, v in act.items() if k != "loadgen")
        for name, v in act.items():
            rows.append(
                [
                    s["sessions"],
                    name,
                    v.get("cpu_cores"),
                    _milli(v.get("cores_per_session")),
                    v.get("voluntary_cs_per_s"),
                    v.get("involuntary_cs_per_s"),
                    v.get("wakeups_per_s_per_session"),
                    v.get("run_periods_per_s"),
                    v.get("runqueue_wait_cores"),
                    v.get("threads"),
                ]
            )
        if act:
            n = s["sessions"]
            rows.append(
                [
                    n,
                    "stack (no loadgen)",
                    round(total, 3),
                    _milli(total / n),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                ]
            )
            if base:
                rows.append([n, "  x in-process", None, f"x{total / n / base:.1f}", *[None] * 6])
    if not rows:
        return ""
    head = (
        f"  in-process baseline: {_milli(base)} millicores per session"
        f" ({(b.get('baseline') or {}).get('cpu_sessions')} sessions in lockstep, same sitting)"
        if base
        else "  in-process baseline: " + str((b.get("baseline") or {}).get("error", "not run"))
    )
    return (
        table(
            [
                "N",
                "process",
                "cores",
                "mcores/sess",
                "vol cs/s",
                "invol cs/s",
                "wakeups/s/sess",
                "runs/s",
                "runq wait cores",
                "threads",
            ],
            rows,
            "  per process (wakeups = voluntary switches; runs = times put on a CPU; runq wait = "
            "time runnable but waiting for a CPU, in cores)",
        )
        + "\n"
        + head
    )


def _milli(cores: float | None) -> float | None:
    return None if cores is None else round(1000 * cores, 2)


def render_b_redis(b: dict) -> str:
    """Redis at each N (its own INFO counters) and the capacity projection."""
    rows = []
    for s in b.get("steps", []):
        r = s.get("redis")
        if not r:
            continue
        top = ", ".join(f"{c['command']} {c['calls_per_s_per_session']}" for c in r["commands"][:4])
        rows.append(
            [
                s["sessions"],
                (s["processes"].get("redis") or {}).get("cpu_cores"),
                r["commands_per_s"],
                r["commands_per_s_per_session"],
                r["cpu_us_per_command"],
                r["used_memory_mib_per_session"],
                r["rss_mib_after"],
                top,
            ]
        )
    if not rows:
        return ""
    out = [
        table(
            [
                "N",
                "cores",
                "cmds/s",
                "cmds/s/sess",
                "us/cmd",
                "used_memory MiB/sess",
                "RSS MiB",
                "busiest (calls/s/sess)",
            ],
            rows,
            "  Redis (INFO deltas over the streaming; used_memory from before the clients connected)",
        )
    ]
    cap = b.get("redis_capacity")
    if cap:
        out.append(
            f"  Redis capacity (from N={cap['from_steps']}"
            + (", which FELL BEHIND: a bound, not a measure" if cap["from_steps_that_fell_behind"] else "")
            + f"): {cap['cores_per_session']} cores and "
            f"{cap['commands_per_s_per_session']} commands/s per session (+{cap['fixed_cores']} cores, "
            f"{cap['fixed_commands_per_s']} commands/s fixed), {cap['cpu_us_per_command']} us per command; "
            f"one Redis core carries {cap['sessions_per_core_by_cpu']} sessions by CPU, "
            f"{cap['sessions_per_core_by_commands']} by commands; a second Redis (or Cluster) is "
            f"needed beyond {cap['second_redis_beyond_sessions']} sessions ({cap['core_budget']:.0%} of "
            f"its core; used_memory then ~{cap['used_memory_mib_at_that']} MiB)"
        )
    return "\n".join(out)


def _b_hops(b: dict) -> str:
    """Where each step's framework time goes: cumulative p50 / p95 per hop, sampled sessions."""
    rows = []
    for s in b.get("steps", []):
        h = s.get("hops")
        if not h:
            continue
        cum = h["cumulative_ms"]
        rows.append(
            [s["sessions"], h["turns"]]
            + [
                f"{cum[k].get('p50')} / {cum[k].get('p95')}"
                for k in ("frame_in_redis", "llm_job", "tts_job", "tts_first_audio", "client_first_audio")
            ]
        )
    if not rows:
        return ""
    return "\n" + table(
        ["N", "turns", "scored frame", "jobs:llm", "jobs:tts", "first audio written", "client first audio"],
        rows,
        "  hop by hop, ms after the decision frame, p50 / p95 (Redis stream ids; a sample of sessions)",
    )


def render_c(c: dict) -> str:
    if "error" in c and "stages" not in c:
        return (
            "c) real models, one session\n  ERROR: "
            + c["error"]
            + "".join(f"\n  --- {k}\n{v}" for k, v in (c.get("logs") or {}).items())
        )
    head = render_load(
        c,
        f"c) {c.get('profile', 'cpu')} profile (real models), one session, the client waits for each reply",
        fw_label="decision frame -> reply audio",
    )
    stages = table(
        DIST_HEADERS[:-1],
        [_dist_row(k, v)[:-1] for k, v in c["stages"].items()],
        "  per-stage milestones from the `metrics` events (ms after end of speech)",
    )
    spans = table(
        DIST_HEADERS[:-1],
        [_dist_row(k, v)[:-1] for k, v in c["spans"].items()],
        "  the same as consecutive spans",
    )
    parts = [head, stages, spans]
    if c.get("per_turn"):
        parts.append(
            table(
                ["turn", "voice-to-voice", "end of turn", "STT", "LLM first token", "TTS first audio"],
                [
                    [
                        t["turn"],
                        t["voice_to_voice_ms"],
                        t["end_of_turn_ms"],
                        t["stt_ms"],
                        t["llm_first_token_ms"],
                        t["tts_first_audio_ms"],
                    ]
                    for t in c["per_turn"]
                ],
                "  per turn (ms; voice-to-voice at the client, the stages as consecutive spans)",
            )
        )
    alone = c.get("alone")
    if alone and "error" not in alone:
        parts.append(
            table(
                ["stage run alone (ms, median)", "ms"],
                [
                    ["end-of-turn silence (setting)", alone["end_of_turn_ms"]],
                    ["STT of the question", alone["stt_ms"]],
                    ["LLM first token", alone["llm_first_token_ms"]],
                    ["TTS first chunk of the first unit", alone["tts_first_chunk_ms"]],
                    ["sum, back to back", alone["sum_ms"]],
                ],
                f"  each stage alone, nothing else running (transcript {alone['transcript']!r}, "
                f"first unit {alone['first_unit']!r})",
            )
        )
    ratios = c.get("ratios") or {}
    if ratios:
        parts.append("  ratios: " + ", ".join(f"{k} = {v}" for k, v in ratios.items()))
    w = c.get("wer") or {}
    if w.get("turns"):
        parts.append(f"  transcripts: WER {w['mean']} over {w['turns']} turns ({w['distinct']})")
    pre, pause = c.get("preemptive_replies") or {}, c.get("pause_transcripts") or {}
    if any(pre.values()) or any(pause.values()):
        started = sum(pre.values())
        share = f", wasted share {pre.get('wasted', 0) / started:.2f}" if started else ""
        parts.append(
            f"  pause transcripts: used {pause.get('used', 0):.0f}, wasted {pause.get('wasted', 0):.0f}; "
            f"preemptive replies: used {pre.get('used', 0):.0f}, wasted {pre.get('wasted', 0):.0f}, "
            f"rerun {pre.get('rerun', 0):.0f}{share}"
        )
    return "\n".join(parts)


def render_d(d: dict, a: dict | None, b: dict | None) -> str:
    if "error" in d:
        return "d) ERROR: " + d["error"]
    rows = [_dist_row("in-process framework overhead", d["framework_ms"])[:-1]]
    t = table(DIST_HEADERS[:-1], rows, "d) in-process baseline (stub models, no Redis, no sockets)")
    cpu = (
        f"  CPU: {d['cores_per_session']} cores per real-time session "
        f"({d['sessions_per_core']} sessions per core) over {d['cpu_sessions']} sessions in lockstep"
    )
    lines = [t, cpu]
    if a and "error" not in a and a["framework_ms"]["p50"] and d["framework_ms"]["p50"]:
        lines.append(
            f"  distributed / in-process framework overhead p50: {a['framework_ms']['p50']} / "
            f"{d['framework_ms']['p50']} ms = x{a['framework_ms']['p50'] / d['framework_ms']['p50']:.0f}"
        )
    if b and "steps" in b:
        ok = [s for s in b["steps"] if "error" not in s and s["verdict"]["ok"]]
        if ok:
            s = ok[-1]
            per = s["stack_cpu_cores"] / s["sessions"]
            lines.append(
                f"  distributed stack CPU per session at N={s['sessions']}: {per:.4f} cores "
                f"= x{per / d['cores_per_session']:.1f} the in-process cost"
            )
    return "\n".join(lines)


def render_summary(res: dict) -> str:
    a, b, c, d = (res["scenarios"].get(k) for k in "abcd")
    rows = []
    if a and "error" not in a:
        rows.append(["framework overhead p50, 1 session (ms)", a["framework_ms"]["p50"], "<= 10", 25])
        rows.append(["framework overhead p99, 1 session (ms)", a["framework_ms"]["p99"], "<= 30", 41])
        rows.append(["overhead p50, 1 session (ms)", a["overhead_ms"]["p50"], "-", 45])
        rows.append(["overhead p99, 1 session (ms)", a["overhead_ms"]["p99"], "-", 99])
    pc = res["scenarios"].get("pipecat")
    pc = pc if pc and "steps" in pc else None
    if b and "steps" in b:
        pipecat = f"{pc['density']} (measured, same sitting)" if pc else "9 / 10"
        rows.append(["density (sessions, stub models, real VAD)", b["density"], ">= 100", pipecat])
        if b.get("mib_per_session_slope") is not None:
            rows.append(["memory per session, slope (MiB)", b["mib_per_session_slope"], "<= 2", "~10"])
        ok = [s for s in b["steps"] if "error" not in s]
        if ok:
            big = max(ok, key=lambda s: s["sessions"])
            rows.append(
                [f"memory per session at N={big['sessions']} (MiB)", big["mib_per_session"], "<= 2", "~10"]
            )
    if pc and not (b and "steps" in b):
        rows.append(["Pipecat 1.14 density, one process (sessions, measured)", pc["density"], "-", "-"])
    if c and "error" not in c:
        rows.append(
            [
                f"voice-to-voice p50, {c.get('profile', 'cpu')} profile (ms)",
                c["voice_to_voice_ms"]["p50"],
                "<= 1200",
                "-",
            ]
        )
        r = c.get("ratios") or {}
        if "v2v_p50_over_stages_alone" in r:
            rows.append(["voice-to-voice p50 / stages alone", r["v2v_p50_over_stages_alone"], "<= 0.7", "-"])
        if "turn20_over_turn2" in r:
            rows.append(["turn 20 / turn 2 (voice-to-voice)", r["turn20_over_turn2"], "<= 1.1", "-"])
    if d and "error" not in d:
        rows.append(["in-process framework overhead p50 (ms)", d["framework_ms"]["p50"], "-", "-"])
    return table(["figure", "measured", "target", "Pipecat 1.14"], rows, "Summary")


def save(res: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"bench-{stamp}.json"
    text = json.dumps(res, indent=1, default=str)
    path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    return path
