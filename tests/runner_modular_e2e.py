"""End-to-end run of the modular stack: every service as its own process, a real Redis,
a spoken question played in over the WebSocket at real-time pace.

    python tests/runner_modular_e2e.py --plumbing   # stub models: the plumbing, in seconds
    python tests/runner_modular_e2e.py              # the CPU profile: real models
    python tests/runner_modular_e2e.py --plumbing --redis-url redis+cluster://127.0.0.1:7000
                                                    # on a Redis of yours (any JARVIS_REDIS_URL)

It asserts the event sequence, the transcript, the reply text, the reply audio and that the
saved session holds the turn; with real models, that the transcript matches what was said
(WER <= 0.2) and that the reply audio, transcribed back, matches the reply text (WER <= 0.3).

With real models the models run under the resource service's arbitration: it starts Whisper,
SmolLM2 (llama.cpp's server) and Piper as process-runtime servers on a simulated GPU sized so
that they fit together for `sts` (tests/support/cpu_registry.py). After the spoken turn the
session switches to the vision pipeline, whose model (SmolLM2 on a server of its own: the CPU
profile has no vision model) does not fit beside the idle chat model, and asks a typed
question: the runner checks that the client saw LOADING with that model's progress, that the
chat model was evicted (and nothing else), that the turn completed, and that every model
server stopped with the stack. Exit status 0 when every check passes.
tests/e2e/test_modular.py runs both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# run as a script from anywhere: the project root must be importable before these imports
from tests.support import cpu_registry  # noqa: E402
from tests.support.client import Client  # noqa: E402
from tests.support.speech import concat, silence, speak, wer  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402

QUESTION = "What color is the sky on a clear day?"
TYPED_QUESTION = "What is the capital of France?"  # the vision pipeline's turn, after the switch

# the full mode's arbitration checks (tests/e2e/test_modular.py asserts each one ran and passed)
START_LOADING = "session start showed LOADING for the sts models"
SWITCH_LOADING = "the switch to vision showed LOADING with its model's progress up to ready"
EVICTION = "the switch evicted the idle chat model (not in vision), nothing else"
RESIDENT = "resident after the switch: the vision pipeline's models"
SWITCH_TURN = "the vision turn completed with a whole spoken reply"
SWITCH_SAVED = "saved session holds the vision turn"
STOPPED = "every model server stopped with the stack"
ARBITRATION_CHECKS = (START_LOADING, SWITCH_LOADING, EVICTION, RESIDENT, SWITCH_TURN, SWITCH_SAVED, STOPPED)


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    transcript: str = ""
    reply: str = ""
    reply_audio_text: str = ""
    metrics: dict = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, bool(ok), detail))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def summary(self) -> str:
        lines = [
            f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else "")
            for name, ok, detail in self.checks
        ]
        passed = sum(ok for _, ok, _ in self.checks)
        lines.append(f"{passed} passed, {len(self.checks) - passed} failed")
        return "\n".join(lines)


def _sequence_ok(events: list[dict]) -> tuple[bool, str]:
    """The order a user sees: ready, LISTENING, speech on/off, THINKING, transcript, reply,
    audio_start, SPEAKING, audio_end, metrics."""
    want = [
        ("ready", None),
        ("state", "LISTENING"),
        ("vad", True),
        ("vad", False),
        ("state", "THINKING"),
        ("transcript", True),
        ("reply", None),
        ("audio_start", None),
        ("state", "SPEAKING"),
        ("audio_end", None),
        ("metrics", None),
    ]
    i = 0
    for e in events:
        kind, arg = want[i]
        if e["type"] != kind:
            continue
        if kind == "state" and e["state"] != arg:
            continue
        if kind == "vad" and e["speaking"] != arg:
            continue
        if kind == "transcript" and not e["final"]:
            continue
        i += 1
        if i == len(want):
            return True, ""
    return (
        False,
        f"stopped before {want[i]}; saw {[e['type'] + ':' + str(e.get('state', '')) for e in events]}",
    )


async def _turn(url: str, audio: np.ndarray, timeout: float, close: bool = True) -> Client:
    c = await Client.open(url)
    streamer = None
    try:
        await c.start(pipeline="sts")
        await c.wait_for("state", state="LISTENING", timeout=timeout)  # with a resource service: loaded
        streamer = asyncio.create_task(c.stream(concat(audio, silence(timeout))))
        await c.wait_for("metrics", timeout=timeout)
        await c.wait_for("state", state="LISTENING", count=2, timeout=timeout)  # after playback
    except BaseException:
        await c.close()
        raise
    finally:
        if streamer is not None:
            streamer.cancel()
            await asyncio.gather(streamer, return_exceptions=True)
    if close:
        await c.close()
    return c


@dataclass
class Switch:
    """What the full mode's pipeline switch left: where the spoken turn's events and audio end,
    the resource service's model events and its status afterwards."""

    events_at: int = 0
    audio_at: int = 0
    model_events: list[tuple[str, str, str]] = field(default_factory=list)  # model, state, message
    residents: list[str] = field(default_factory=list)


async def _switch_pipeline(c: Client, timeout: float) -> Switch:
    """Switch the session to the vision pipeline and ask a typed question that is spoken back."""
    sw = Switch(events_at=len(c.events), audio_at=len(c.audio))
    await c.send({"type": "config", "pipeline": "vision"})
    await c.wait_for("ready", count=2, timeout=timeout)
    await c.send({"type": "text", "text": TYPED_QUESTION, "speak": True})
    await c.wait_for("metrics", count=2, timeout=timeout)
    return sw


async def _resource_view(redis_url: str, sw: Switch) -> None:
    from services.resource import messages
    from services.resource.client import ResourceClient
    from shared import codec
    from shared.bus import Bus

    bus = Bus(redis_url)
    try:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await bus.redis.xrange(messages.EVENTS))
        events = [codec.from_entry(fields) for _, fields in entries]
        sw.model_events = [(e.model, e.state, e.message) for e in events]
        status = await ResourceClient(bus).status()
        sw.residents = sorted(r["model"] for r in status.residents) if status else []
    finally:
        await bus.close()


async def _session(url: str, redis_url: str, audio: np.ndarray, timeout: float) -> tuple[Client, Switch]:
    c = await _turn(url, audio, timeout, close=False)
    try:
        sw = await _switch_pipeline(c, timeout)
        await _resource_view(redis_url, sw)
    finally:
        await c.close()
    return c, sw


def _leftover_servers(workdir: Path) -> list[int]:
    """Pids of model servers the resource service recorded and did not stop (killed here)."""
    import os
    import signal

    from services.resource.runtimes.process import pid_alive

    def running(rec: dict) -> bool:  # that pid, still running that server (not a reused pid)
        pid = int(rec.get("pid", 0))
        cmdline = Path(f"/proc/{pid}/cmdline")
        with contextlib.suppress(OSError):
            return (
                pid > 0
                and pid_alive(pid)
                and cmdline.read_bytes().split(b"\0")[:-1] == [a.encode() for a in rec.get("argv", [])]
            )
        return False

    path = cpu_registry.state_file(workdir)
    state = json.loads(path.read_text()) if path.exists() else {}
    left = [int(rec["pid"]) for rec in state.values() if running(rec)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # its own process group: the server and its children
    return left


def run(plumbing: bool, workdir: Path, timeout: float = 120.0, redis_url: str | None = None) -> Report:
    """One session through the stack; on its own Redis, or on the one at `redis_url` (any
    topology JARVIS_REDIS_URL takes: a Sentinel or Cluster URL)."""
    report = Report()
    audio = concat(silence(0.5), speak(QUESTION), silence(0.1))
    sw: Switch | None = None
    redis_env = {"JARVIS_REDIS_URL": redis_url} if redis_url else {}
    try:
        if plumbing:
            with running_stack(workdir, profile="stub", env=redis_env) as stack:
                c = asyncio.run(_turn(stack.url, audio, timeout))
        else:
            env = {**cpu_registry.arbitrated_env(workdir), **redis_env}
            try:
                with running_stack(
                    workdir, profile="cpu", arbitrated=True, env=env, timeout=timeout
                ) as stack:
                    c, sw = asyncio.run(_session(stack.url, stack.redis_url, audio, timeout))
            finally:
                left = _leftover_servers(workdir)
                report.check(STOPPED, not left, f"left running: {left}")
    except Exception as exc:  # noqa: BLE001 - a failed run is a failed check, with the logs shown
        report.check("the stack ran the session", False, f"{type(exc).__name__}: {exc}")
        return report
    events = c.events[: sw.events_at] if sw else c.events
    reply_audio = bytes(c.audio[: sw.audio_at] if sw else c.audio)
    ok, why = _sequence_ok(events)
    report.check("event sequence", ok, why)
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    report.transcript = finals[0]["text"] if finals else ""
    replies = [e for e in events if e["type"] == "reply" and e.get("final")]
    report.reply = replies[0].get("text", "") if replies else ""
    report.metrics = next((e for e in events if e["type"] == "metrics"), {})
    report.check("reply audio is non-empty", len(reply_audio) > 16000, f"{len(reply_audio)} bytes")
    m = report.metrics
    report.check(
        "metrics add up",
        bool(m)
        and all(
            m.get(k) is None or 0 <= m[k] <= m["total_ms"]
            for k in ("transcript_ms", "first_token_ms", "first_audio_ms")
        ),
        json.dumps({k: v for k, v in m.items() if k.endswith("_ms")}),
    )
    if plumbing:
        report.check(
            "transcript from the stub", report.transcript.startswith("I spoke for"), report.transcript
        )
        report.check(
            "reply echoes the transcript", report.reply == f"You said: {report.transcript}.", report.reply
        )
    else:
        w = wer(QUESTION, report.transcript)
        report.check(
            "transcript matches the question (WER <= 0.2)", w <= 0.2, f"{report.transcript!r}, WER {w:.2f}"
        )
        report.check("reply is non-empty", bool(report.reply.strip()), report.reply)
        rate = next((e["sample_rate"] for e in events if e["type"] == "audio_start"), 0)
        report.reply_audio_text = _transcribe(reply_audio, rate)
        w2 = wer(report.reply, report.reply_audio_text)
        report.check(
            "reply audio speaks the reply (WER <= 0.3)",
            w2 <= 0.3,
            f"{report.reply_audio_text!r}, WER {w2:.2f}",
        )
    sid = next(e["session_id"] for e in events if e["type"] == "ready")
    saved = _saved_session(workdir / "sessions" / f"{sid}.json")
    report.check(
        "saved session holds the turn",
        bool(saved)
        and saved["history"][0]["user"] == report.transcript
        and saved["history"][0]["assistant"] == report.reply,
        f"{len(saved.get('history', [])) if saved else 0} turn(s)",
    )
    if sw is not None:
        _check_switch(report, c, sw, saved)
    return report


def _check_switch(report: Report, c: Client, sw: Switch, saved: dict | None) -> None:
    """The arbitration checks of the full mode (see the module docstring)."""
    start = c.events[: sw.events_at]
    first = {mm["model"] for ev in start if ev["type"] == "loading" for mm in ev["models"]}
    want = {cpu_registry.TURN_MODELS[r] for r in ("stt", "llm", "tts")}
    report.check(START_LOADING, want <= first, f"loading: {sorted(first)}")

    after = c.events[sw.events_at :]
    vlm = cpu_registry.TURN_MODELS["vlm"]
    progress = [mm for ev in after if ev["type"] == "loading" for mm in ev["models"] if mm["model"] == vlm]
    states = [e["state"] for e in after if e["type"] == "state"]
    report.check(
        SWITCH_LOADING,
        "LOADING" in states
        and any(0 <= mm["progress"] < 1.0 for mm in progress)
        and bool(progress)
        and progress[-1]["state"] == "ready"
        and progress[-1]["progress"] == 1.0
        and any(ev.get("eta_s") is not None for ev in after if ev["type"] == "loading"),
        " ".join(f"{mm['state']}:{mm['progress']}" for mm in progress) or f"states {states}",
    )

    llm = cpu_registry.TURN_MODELS["llm"]
    unloaded = [(m, msg) for m, state, msg in sw.model_events if state == "unloaded"]
    ready = [(m, state) for m, state, _ in sw.model_events if state == "ready"]
    report.check(
        EVICTION,
        [m for m, _ in unloaded] == [llm] and vlm in unloaded[0][1] and (vlm, "ready") in ready,
        f"unloaded {unloaded}",
    )
    want_resident = sorted(cpu_registry.TURN_MODELS[r] for r in ("stt", "vlm", "tts"))
    report.check(RESIDENT, sw.residents == want_resident, f"{sw.residents}")

    m2 = next((e for e in after if e["type"] == "metrics"), {})
    reply2 = next((e.get("text", "") for e in after if e["type"] == "reply" and e.get("final")), "")
    audio2 = len(c.audio) - sw.audio_at
    report.check(
        SWITCH_TURN,
        # a whole sentence: a reply cut off mid-way (a probe interrupting the stream) fails here
        m2.get("turn") == 2 and reply2.rstrip()[-1:] in (".", "!", "?") and audio2 > 16000,
        f"turn {m2.get('turn')}, {reply2!r}, {audio2} bytes",
    )
    history = saved.get("history", []) if saved else []
    report.check(
        SWITCH_SAVED,
        len(history) >= 2 and history[1]["user"] == TYPED_QUESTION and history[1]["assistant"] == reply2,
        f"{len(history)} turn(s)",
    )


def _saved_session(path: Path, wait: float = 5.0) -> dict | None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if path.exists():
            data = json.loads(path.read_text())
            if data.get("history"):
                return data
        time.sleep(0.1)
    return None


def _transcribe(pcm: bytes, rate: int) -> str:
    from services.stt.whisper import WhisperStt
    from shared.model import SttRequest

    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    if rate != 16000 and len(samples):
        n = int(len(samples) * 16000 / rate)
        samples = np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples)
    pcm16 = samples.astype("<i2").tobytes()

    async def go() -> str:
        stt = WhisperStt()
        await stt.load()
        out = [t.text async for t in stt.infer(SttRequest(pcm16, 16000))]
        await stt.unload()
        return " ".join(out)

    return asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plumbing", action="store_true", help="stub models (no real models needed)")
    ap.add_argument("--workdir", help="keep logs and sessions here (default: a temp dir)")
    ap.add_argument("--redis-url", help="run on this Redis (a JARVIS_REDIS_URL) instead of its own")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jarvis-e2e-") as tmp:
        workdir = Path(args.workdir or tmp)
        report = run(args.plumbing, workdir, redis_url=args.redis_url)
        print(report.summary())
        if not report.ok:
            print(f"logs: {workdir / 'logs'}", file=sys.stderr)
            if not args.workdir:
                for log in sorted((workdir / "logs").glob("*.log")):
                    print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
