"""Scenario `pipecat`: Pipecat 1.14's density, measured like scenario b in the same sitting.

`python -m bench --scenario pipecat` (or `--scenario b,pipecat`: both from one sitting) starts
`bench.pipecat_server` (Pipecat in one process, one pipeline per WebSocket; what in it is
Pipecat's and what is ours is said there) on 127.0.0.1 and a free port for each step, streams
N sessions through it with scenario b's load generator (`bench.loadgen`, same plans, same
seed), stops it by pid, and reads the same figures with the same code
(`bench.scenarios.client_figures`). Pipecat's own VAD decides its turns, so the replies are
then paired with the turns it decided (`own_turn_figures`, found by replaying its
`SileroVADAnalyzer` over the same streams: `pipecat_decisions`), while framework overhead keeps
b's meaning: first reply audio minus the frame that completed *Jarvis's* end-of-turn decision
for that question (the offline replay of Silero + EndpointDetector). Missed turns and the
decision-frame lags (the late-frame rule) are read against Pipecat's own decisions; b's
pairing against Jarvis's frames stays in the JSON beside them. The steps,
bisection and verdict are b's (`bench.scenarios.rising`, `verdict`): late decision frames,
framework p99 > 100 ms, missed turns, client errors. CPU is the server process's and the
load generator's; memory per session is the server's RSS growth over N. b's per-process
table, Redis figures and hop-by-hop spans have no counterpart here and are not reported.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench import loadgen
from bench.audio import Clip, Decision
from bench.monitor import ProcMonitor, renice
from bench.report import step_head, step_row, table
from bench.scenarios import (
    LATE_S,
    Options,
    _projection,
    _r,
    _step_line,
    client_figures,
    rising,
    run_async,
    verdict,
)
from bench.stats import FRAME, RATE, WINDOW, count_over, per_session_mib, slope, summarize

ROOT = Path(__file__).resolve().parent.parent
SERVER = "pipecat"  # the server process's name in the figures


def pipecat_version() -> str | None:
    try:
        return version("pipecat-ai")
    except PackageNotFoundError:
        return None


def missing() -> str | None:
    """Why the anchor cannot run here, or None."""
    import importlib.util

    if pipecat_version() is None:
        return "pipecat-ai is not installed (make install installs 1.14.0)"
    for mod in ("loguru", "fastapi", "uvicorn", "pipecat.transports.websocket.fastapi"):
        if mod.startswith("pipecat."):
            from loguru import logger

            logger.disable("pipecat")  # its import banner, in this process only
        try:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is missing (make install installs Pipecat's runtime dependencies)"
        except ModuleNotFoundError as exc:
            return f"{mod}: {exc} (make install installs Pipecat's runtime dependencies)"
    return None


class PipecatServer:
    """`python -m bench.pipecat_server` as a child process, started and stopped by pid."""

    def __init__(self, end_silence_ms: float, workdir: Path) -> None:
        from jarvis.redis_server import free_port

        self.port = free_port()
        self.end_silence_ms = end_silence_ms
        self.log_path = workdir / "pipecat-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 120.0) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.pipecat_server",
                    "--port",
                    str(self.port),
                    "--end-silence-ms",
                    str(self.end_silence_ms),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Pipecat server exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the Pipecat server did not listen within {timeout:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # uvicorn closes the connections and ends every pipeline
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def run_pipecat_load(n: int, turns: int, clip: Clip, opts: Options, endpoint, vad) -> dict:
    """One step: a fresh server, N sessions streamed through it, every figure b reads."""
    rng = random.Random(opts.seed * 1000 + n)  # b's plans for the same N
    plans = loadgen.make_plans(n, turns, clip, opts.gap_s, rng)
    result: dict = {"profile": "pipecat", "sessions": n, "turns": turns, "wait_reply": False}
    clients: list[loadgen.LoadClient] = []
    monitor: ProcMonitor | None = None
    with tempfile.TemporaryDirectory(prefix=f"jarvis-bench-pipecat-n{n}-") as tmp:
        server = PipecatServer(opts.end_silence_ms, Path(tmp))
        try:
            t = time.monotonic()
            server.start(timeout=opts.start_timeout)
            result["stack_start_s"] = round(time.monotonic() - t, 1)
            assert server.proc is not None
            pids = {SERVER: server.proc.pid, "loadgen": os.getpid()}
            if opts.priority is not None:
                failed = renice(pids, opts.priority)
                result["priority"] = opts.priority
                if failed:
                    result["priority_failed"] = failed
            monitor = ProcMonitor(pids).start()
            time.sleep(0.5)  # let start-up settle before the baseline
            m0 = monitor.mark()

            async def drive() -> tuple:
                nonlocal clients
                clients = await loadgen.connect_all(server.url, plans, timeout=60)
                m1 = monitor.mark()
                try:
                    w0, w1 = await loadgen.stream_all(clients, clip, max_wait_s=opts.reply_wait_s, rng=rng)
                    m2 = monitor.mark()
                finally:
                    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
                return m1, m2, w0, w1

            m1, m2, w0, w1 = run_async(drive())
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on with the next step
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["logs"] = {"pipecat-server.log": server.log_tail()}
            return result
        finally:
            if monitor is not None:
                monitor.stop()
            server.stop()
        result["server_errors"] = _server_errors(server.log_tail(20000))
    result["streaming_s"] = round(w1 - w0, 1)
    jarvis = client_figures(result, clients, clip, opts, endpoint, vad, turns)
    own_turn_figures(result, clients, jarvis, clip, opts)
    usage = ProcMonitor.usage(m1, m2)
    for name, u in usage.items():
        u["rss_mib_idle"] = round(m0.rss.get(name, 0) / (1 << 20), 1)
        u["rss_mib_peak"] = round(monitor.peak_rss.get(name, 0) / (1 << 20), 1)
    result["processes"] = usage
    result["other_load_cores"] = monitor.other_load(m1.wall, m2.wall)
    result["stack_cpu_cores"] = usage.get(SERVER, {}).get("cpu_cores", 0.0)
    before, after = m0.rss.get(SERVER, 0), m2.rss.get(SERVER, 0)
    result["mib_per_session"] = _r(per_session_mib(before, after, n), 3)
    result["rss_mib_server"] = {"idle": round(before / (1 << 20), 1), "loaded": round(after / (1 << 20), 1)}
    result["verdict"] = verdict(result, opts)
    return result


def pipecat_decisions(
    plans: list[loadgen.Plan], clip: Clip, end_silence_ms: float
) -> dict[tuple, list[Decision]]:
    """Pipecat's own VAD decisions on each client's exact stream: the frame whose arrival
    turned its `SileroVADAnalyzer` (the server's settings) SPEAKING ("start") or QUIET ("end"),
    fed 20 ms frame by frame as the server gets them. The analyzer's state depends only on
    the audio (its windows, volume smoothing and model resets are counted in samples), so
    this is where the live server's decisions fell; only the time it took to act on them is
    missing, which is what the decision-frame lag measures."""
    from loguru import logger

    logger.disable("pipecat")  # its per-analyzer debug lines, in this process only
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams, VADState

    distinct: dict[tuple, loadgen.Plan] = {}
    for p in plans:
        distinct.setdefault(p.key(), p)

    async def replay(plan: loadgen.Plan) -> list[Decision]:
        vad = SileroVADAnalyzer(params=VADParams(stop_secs=end_silence_ms / 1000))
        vad.set_sample_rate(RATE)
        pcm = plan.samples(clip).astype("<i2").tobytes()
        out: list[Decision] = []
        state = VADState.QUIET
        try:
            for j in range(len(pcm) // (FRAME * 2)):
                new = await vad.analyze_audio(pcm[j * FRAME * 2 : (j + 1) * FRAME * 2])
                if new != state and new in (VADState.SPEAKING, VADState.QUIET):
                    kind = "start" if new == VADState.SPEAKING else "end"
                    end_ms = (j + 1) * FRAME * 1000 / RATE - end_silence_ms if kind == "end" else None
                    out.append(Decision(kind, (j + 1) * FRAME // WINDOW, j, end_ms))
                    state = new
        finally:
            await vad.cleanup()
        return out

    async def all_plans() -> dict[tuple, list[Decision]]:
        return {k: await replay(p) for k, p in distinct.items()}

    return asyncio.run(all_plans())


def own_turn_figures(
    result: dict, clients: list[loadgen.LoadClient], jarvis: list[dict], clip: Clip, opts: Options
) -> None:
    """Rewrite the turn figures of `result` (filled by b's `client_figures` against Jarvis's
    decision frames; `jarvis`: its per-client analyses) for a stack whose own VAD decides.

    Each reply is paired with the turn Pipecat's own VAD decided (`pipecat_decisions`): its
    end decision falls a frame or two before or after Jarvis's on the same stream, and a reply
    that comes within ~20 ms of an earlier decision reaches the client before Jarvis's decision
    frame is even sent, which b's pairing (a reply after that frame) would count as a missed
    turn and a false one. Then, per answered turn:
    - framework overhead is still first reply audio - the send time of the frame that completed
      *Jarvis's* decision for that question (b's definition; negative when Pipecat decided
      first), and the same from Pipecat's own decision frame is kept as
      `framework_own_decision_ms`;
    - overhead and voice-to-voice do not depend on a decision; "VAD + endpointing" is Pipecat's;
    - missed: a turn Pipecat decided and never answered, or a question its VAD never turned into
      a turn (fewer end decisions than Jarvis's replay); false: THINKING states or replies
      beyond its own turns, or more end decisions than Jarvis's replay;
    - decision-frame lags (the late-frame rule) against Pipecat's own decision frames: its
      speech-start rule (start_secs = 0.2 s above confidence 0.7) confirms speech up to ~0.3 s
      after Jarvis's (250 ms of speech above 0.5) by design, which is not lateness.
    b's figures against Jarvis's frames stay in the result with a `_vs_jarvis_replay` suffix."""
    own = pipecat_decisions([c.plan for c in clients], clip, opts.end_silence_ms)
    for key in ("framework_ms", "decision_lag_ms", "late_decision_frames", "missed_turns", "false_turns"):
        result[f"{key}_vs_jarvis_replay"] = result[key]
    lags: list[float] = []
    turns: list[dict] = []
    missed = false = 0
    for c, jv in zip(clients, jarvis, strict=True):
        a = loadgen.analyze(c, own[c.plan.key()], clip, opts.end_silence_ms)
        frame_of = {t["question"]: t["frame"] for t in jv["turns"] if t.get("question") is not None}
        for t in a["turns"]:
            k = t.get("question")
            t["framework_own_ms"] = t["framework_ms"]
            t["framework_ms"] = None
            if not t["missed"] and k in frame_of and frame_of[k] < len(c.sent):
                t["framework_ms"] = (t["first_audio_t"] - c.sent[frame_of[k]]) * 1000
            turns.append(t)
        lags += [t["decision_lag_ms"] for t in a["turns"] if t["decision_lag_ms"] is not None]
        lags += a["start_lags_ms"]
        missed += a["missed"] + max(0, jv["expected"] - a["expected"])
        false += a["false_turns"] + max(0, a["expected"] - jv["expected"])

    def fig(name: str, k: int | None = None) -> dict:
        return summarize(
            t[name] for t in turns if t.get(name) is not None and (k is None or t.get("question") == k)
        )

    result["framework_ms"] = fig("framework_ms")
    result["framework_own_decision_ms"] = fig("framework_own_ms")
    result["overhead_ms"] = fig("overhead_ms")
    result["voice_to_voice_ms"] = fig("voice_to_voice_ms")
    result["vad_delay_ms"] = fig("vad_delay_ms")
    result["by_turn"] = {
        str(k + 1): {n: fig(n, k) for n in ("framework_ms", "overhead_ms", "voice_to_voice_ms")}
        for k in range(len(result.get("by_turn") or {}))
    }
    result["missed_turns"] = missed
    result["false_turns"] = false
    result["decision_lag_ms"] = summarize(lags)
    result["late_decision_frames"] = count_over(lags, LATE_S * 1000)
    result["decision_frames"] = len(lags)
    result["pipecat_decisions"] = sum(len(v) for v in own.values())


def _server_errors(log: str) -> list[str]:
    """The server's ERROR lines (first five): a pipeline that broke shows here."""
    return [line[-300:] for line in log.splitlines() if "| ERROR" in line or "Traceback" in line][:5]


def scenario_pipecat(
    clip: Clip,
    opts: Options,
    endpoint,
    vad,
    ns: list[int],
    keep_going: bool = False,
    refine: int = 1,
    log=print,
) -> dict:
    """Rising N through Pipecat, b's steps and verdict."""
    why = missing()
    if why:
        return {"scenario": "pipecat", "error": why}
    steps: list[dict] = []

    def step(n: int) -> bool:
        log(f"  pipecat: {n} sessions ...")
        r = run_pipecat_load(n, opts.turns, clip, opts, endpoint, vad)
        steps.append(r)
        log(f"     {_step_line(r)}")
        return "error" not in r and r["verdict"]["ok"]

    density, first_fail = rising(ns, step, keep_going=keep_going, refine=refine)
    good = sorted((s for s in steps if "error" not in s), key=lambda s: s["sessions"])
    return {
        "scenario": "pipecat",
        "pipecat_version": pipecat_version(),
        "server": "one process, one pipeline per WebSocket (bench/pipecat_server.py)",
        "vad": f"Pipecat's SileroVADAnalyzer, default params, stop_secs = {opts.end_silence_ms / 1000:g} s",
        "steps": good + [s for s in steps if "error" in s],
        "density": density,
        "first_failing_n": first_fail,
        "mib_per_session_slope": _r(
            slope([s["sessions"] for s in good], [s["rss_mib_server"]["loaded"] for s in good]), 3
        ),
        "cpu_projection": _projection(good),
    }


def render_pipecat(r: dict) -> str:
    title = f"pipecat) Pipecat {r.get('pipecat_version') or '?'}, one process, stub models, rising N (ms)"
    if "steps" not in r:
        return f"{title}\n  ERROR: {r.get('error', '?')}"
    rows = []
    for s in r["steps"]:
        if "error" in s:
            rows.append([s["sessions"], *[None] * 10, "error: " + s["error"][:60]])
            continue
        p = s["processes"]
        rows.append(step_row(s, [p.get(SERVER, {}).get("cpu_cores"), p.get("loadgen", {}).get("cpu_cores")]))
    t = table(step_head(["server cores", "loadgen cores"]), rows, title)
    lines = [
        t,
        f"  density: {r['density']} sessions keep up"
        + (f" (first failing N: {r['first_failing_n']})" if r.get("first_failing_n") else " (no step failed)")
        + "; measured with b's load generator and statistics",
        f"  turns decided by {r.get('vad')}; framework overhead from the frame that completed "
        "Jarvis's end-of-turn decision for the question (as in b); late and missed against Pipecat's own "
        "decisions (its VAD replayed over each stream)",
        "  framework overhead from Pipecat's own decision frame, p50 / p99 ms: "
        + ", ".join(
            f"N={s['sessions']} {own['p50']} / {own['p99']}"
            for s in r["steps"]
            if (own := s.get("framework_own_decision_ms"))
        ),
    ]
    if r.get("mib_per_session_slope") is not None:
        lines.append(
            f"  memory per session, slope of the server's RSS over N: {r['mib_per_session_slope']} MiB"
        )
    proj = r.get("cpu_projection")
    if proj:
        lines.append(
            f"  CPU-bound projection for an idle machine (rough): {proj['sessions']} sessions "
            f"({proj['cores_per_session']} cores per extra session incl. load generator, "
            f"{proj['fixed_cores']} fixed, from N={proj['from_steps']}; {proj['cores']} cores less 15%)"
        )
    errs = sorted({e for s in r["steps"] for e in s.get("server_errors") or []})
    if errs:
        lines.append("  server errors: " + " | ".join(errs[:3]))
    for s in r["steps"]:
        if "error" in s and s.get("logs"):
            lines.append(f"  --- N={s['sessions']} server log\n{s['logs'].get('pipecat-server.log', '')}")
    return "\n".join(lines)
