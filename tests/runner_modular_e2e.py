"""End-to-end run of the modular stack: every service as its own process, a real Redis,
a spoken question played in over the WebSocket at real-time pace.

    python tests/runner_modular_e2e.py --plumbing   # stub models: the plumbing, in seconds
    python tests/runner_modular_e2e.py              # the CPU profile: real models

It asserts the event sequence, the transcript, the reply text, the reply audio and that the
saved session holds the turn; with real models, that the transcript matches what was said
(WER <= 0.2) and that the reply audio, transcribed back, matches the reply text (WER <= 0.3).
Exit status 0 when every check passes. tests/e2e/test_modular.py runs both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# run as a script from anywhere: the project root must be importable before these imports
from tests.support.client import Client  # noqa: E402
from tests.support.speech import concat, silence, speak, wer  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402

QUESTION = "What color is the sky on a clear day?"


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


async def _turn(url: str, audio: np.ndarray, timeout: float) -> Client:
    c = await Client.open(url)
    await c.start(pipeline="sts")
    await c.wait_for("state", state="LISTENING", timeout=timeout)
    streamer = asyncio.create_task(c.stream(concat(audio, silence(timeout))))
    try:
        await c.wait_for("metrics", timeout=timeout)
        await c.wait_for("state", state="LISTENING", count=2, timeout=timeout)  # after playback
    finally:
        streamer.cancel()
        await c.close()
    return c


def run(plumbing: bool, workdir: Path, timeout: float = 120.0) -> Report:
    report = Report()
    audio = concat(silence(0.5), speak(QUESTION), silence(0.1))
    profile = "stub" if plumbing else "cpu"
    with running_stack(workdir, profile=profile) as stack:
        c = asyncio.run(_turn(stack.url, audio, timeout))
    events = c.events
    ok, why = _sequence_ok(events)
    report.check("event sequence", ok, why)
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    report.transcript = finals[0]["text"] if finals else ""
    replies = [e for e in events if e["type"] == "reply" and e.get("final")]
    report.reply = replies[0].get("text", "") if replies else ""
    report.metrics = next((e for e in events if e["type"] == "metrics"), {})
    report.check("reply audio is non-empty", len(c.audio) > 16000, f"{len(c.audio)} bytes")
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
        report.reply_audio_text = _transcribe(bytes(c.audio), rate)
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
    return report


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
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jarvis-e2e-") as tmp:
        workdir = Path(args.workdir or tmp)
        report = run(args.plumbing, workdir)
        print(report.summary())
        if not report.ok:
            print(f"logs: {workdir / 'logs'}", file=sys.stderr)
            if not args.workdir:
                for log in sorted((workdir / "logs").glob("*.log")):
                    print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
