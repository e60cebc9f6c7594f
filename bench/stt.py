"""`python -m bench.stt`: faster-whisper settings for short utterances, time against accuracy.

Speaks a set of short questions in Piper's joe voice (the CPU profile's TTS, closer to a person)
and in espeak-ng, then transcribes every clip with each configuration through the STT worker's
own adapter (`services.stt.whisper.WhisperStt.transcribe`): compute type, threads, beam size,
temperature fallback, timestamps, the encoder window (`encoder_window_s`) and faster-whisper's
`chunk_length`. Prints one row per configuration (time per clip p50 / max, WER per voice) and
writes every figure to bench-results/stt-YYYYmmdd-HHMMSS.json. docs/BENCHMARKS.md ("STT")
holds the figures that chose the CPU profile's defaults in services/stt/config.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stats import summarize  # noqa: E402

QUESTIONS = [
    "What color is the sky on a clear day?",
    "What is the weather like in Paris today?",
    "Set a timer for ten minutes.",
    "How far away is the moon?",
    "Who wrote the novel Pride and Prejudice?",
    "Can you remind me to call my mother tomorrow?",
    "What time is it in Tokyo right now?",
    "Tell me a short story about a brave little dog.",
]
VOICES = ("piper-joe", "espeak-en-us")


@dataclass(frozen=True)
class Config:
    name: str
    compute_type: str = "int8"
    cpu_threads: int = 2
    beam_size: int = 5
    temperatures: tuple[float, ...] = (0.0, 0.4, 0.8)
    without_timestamps: bool = False
    encoder_window_s: float = 30.0
    chunk_length: int | None = None  # faster-whisper's own knob (passed straight to it)

    def overrides(self) -> dict[str, Any]:
        return {
            "compute_type": self.compute_type,
            "cpu_threads": self.cpu_threads,
            "beam_size": self.beam_size,
            "temperatures": list(self.temperatures),
            "without_timestamps": self.without_timestamps,
            "encoder_window_s": self.encoder_window_s,
        }


CONFIGS = [
    Config("before: int8, 2 threads, beam 5, timestamps, 30 s window"),
    Config("beam 5, no timestamps", without_timestamps=True),
    Config("beam 1, no timestamps", beam_size=1, without_timestamps=True),
    Config("beam 2, no timestamps", beam_size=2, without_timestamps=True),
    Config("float32, beam 1, no timestamps", compute_type="float32", beam_size=1, without_timestamps=True),
    Config("1 thread, beam 1, no timestamps", cpu_threads=1, beam_size=1, without_timestamps=True),
    Config("beam 1, no timestamps, 10 s window", beam_size=1, without_timestamps=True, encoder_window_s=10),
    Config("beam 2, no timestamps, 10 s window", beam_size=2, without_timestamps=True, encoder_window_s=10),
    Config("beam 5, no timestamps, 10 s window", beam_size=5, without_timestamps=True, encoder_window_s=10),
    Config("beam 1, no timestamps, 8 s window", beam_size=1, without_timestamps=True, encoder_window_s=8),
    Config("beam 1, no timestamps, 6 s window", beam_size=1, without_timestamps=True, encoder_window_s=6),
    Config("beam 5, no timestamps, 6 s window", beam_size=5, without_timestamps=True, encoder_window_s=6),
    # last: faster-whisper keeps a chunk_length in its feature extractor for later calls
    Config("chunk_length 10 (else as before)", chunk_length=10),
]


@dataclass
class Clip:
    voice: str
    text: str
    pcm: bytes
    seconds: float


@dataclass
class Row:
    config: Config
    ms: list[float] = field(default_factory=list)
    wer: dict[str, list[float]] = field(default_factory=dict)
    heard: list[tuple[str, str, str]] = field(default_factory=list)  # voice, reference, transcript


def make_clips(questions: list[str]) -> list[Clip]:
    from tests.support.speech import RATE, speak, speak_piper

    clips = []
    for text in questions:
        for voice in VOICES:
            samples = speak_piper(text) if voice == "piper-joe" else speak(text)
            clips.append(Clip(voice, text, samples.astype("<i2").tobytes(), len(samples) / RATE))
    return clips


def decode(config: Config, clip: Clip, models: dict) -> tuple[float, str]:
    """One clip through one configuration: (ms, transcript)."""
    from services.stt.whisper import WhisperStt, _window, encoder_frames, pcm16_to_float
    from shared.model import SttRequest

    key = (config.compute_type, config.cpu_threads)
    if key not in models:
        models[key] = WhisperStt(compute_type=config.compute_type, cpu_threads=config.cpu_threads)
        asyncio.run(models[key].load())
    model = models[key]
    model.settings = model.settings.model_copy(update=config.overrides())
    t0 = time.perf_counter()
    if config.chunk_length is None:
        text = model.transcribe(SttRequest(clip.pcm, 16000))
    else:  # not a setting of ours: straight to faster-whisper
        audio = pcm16_to_float(clip.pcm, 16000)
        _window.frames = encoder_frames(audio.size, config.encoder_window_s)
        try:
            segments, _ = model._model.transcribe(
                audio,
                language="en",
                beam_size=config.beam_size,
                temperature=list(config.temperatures),
                without_timestamps=config.without_timestamps,
                chunk_length=config.chunk_length,
                condition_on_previous_text=False,
            )
            text = " ".join(s.text.strip() for s in segments)
        finally:
            _window.frames = None
    return (time.perf_counter() - t0) * 1000, text


def run(configs: list[Config], clips: list[Clip], repeat: int) -> list[Row]:
    """Every configuration on every clip, interleaved (clip by clip, configuration by
    configuration), so other work on the machine weighs on all rows alike; a clip's time is
    the best of `repeat` runs."""
    from tests.support.speech import wer

    models: dict = {}
    rows = [Row(c) for c in configs]
    for c in configs:  # load every model and warm the process
        decode(c, clips[0], models)
    for i, clip in enumerate(clips):
        for row in rows:
            best, text = min(decode(row.config, clip, models) for _ in range(repeat))
            row.ms.append(best)
            row.wer.setdefault(clip.voice, []).append(wer(clip.text, text))
            row.heard.append((clip.voice, clip.text, text))
        print(f"  clip {i + 1}/{len(clips)} done", flush=True)
    return rows


def render(rows: list[Row]) -> str:
    from bench.report import table

    body = []
    for r in rows:
        s = summarize(r.ms, 0)
        wers = [sum(v) / len(v) for v in r.wer.values()]
        body.append(
            [
                r.config.name,
                s["p50"],
                s["mean"],
                s["max"],
                *[round(sum(r.wer[v]) / len(r.wer[v]), 3) for v in VOICES],
                round(sum(wers) / len(wers), 3),
            ]
        )
    return table(
        ["configuration", "ms p50", "mean", "max", *[f"WER {v}" for v in VOICES], "WER"],
        body,
        "STT: Whisper base on faster-whisper, one short question at a time",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stt", description=__doc__)
    ap.add_argument("--only", help="comma-separated row numbers (1-based) of the configurations to run")
    ap.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many of the questions")
    ap.add_argument("--repeat", type=int, default=2, help="runs per clip and configuration (best counts)")
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args(argv)
    from bench.scenarios import machine
    from services.stt.config import SttSettings

    configs = CONFIGS
    if args.only:
        configs = [CONFIGS[int(i) - 1] for i in args.only.split(",")]
    clips = make_clips(QUESTIONS[: args.questions])
    print(
        f"bench.stt: {len(clips)} clips ({min(c.seconds for c in clips):.1f}-"
        f"{max(c.seconds for c in clips):.1f} s), voices {', '.join(VOICES)}; "
        f"defaults now: {SttSettings().model_dump(include={'beam_size', 'encoder_window_s'})}",
        flush=True,
    )
    rows = run(configs, clips, args.repeat)
    print()
    print(render(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"stt-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "started": stamp,
                "machine": machine(),
                "command": "python -m bench.stt " + " ".join(argv if argv is not None else sys.argv[1:]),
                "clips": [{"voice": c.voice, "text": c.text, "seconds": round(c.seconds, 2)} for c in clips],
                "rows": [
                    {
                        "config": asdict(r.config),
                        "ms": summarize(r.ms, 1),
                        "wer": {v: round(sum(x) / len(x), 4) for v, x in r.wer.items()},
                        "heard": r.heard,
                    }
                    for r in rows
                ],
            },
            indent=1,
        )
    )
    print(f"\nbench.stt: results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
