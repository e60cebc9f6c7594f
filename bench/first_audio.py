"""`python -m bench.first_audio`: what a first clause instead of a first sentence costs and saves.

For replies like the CPU profile's model gives, cuts each with the splitter as the LLM worker
does (`shared.sentences.SentenceSplitter`: first unit a clause) and as it did before (whole
sentences only), and with Piper (joe voice) measures, interleaved and best of `--repeat`:
- the time to the first audio chunk of the first unit (Piper yields a unit's audio in one piece,
  so this is its whole synthesis);
- the first unit's audio length (how long the client plays while the next unit is made) and
  the next unit's synthesis time (it must be shorter, or the client waits between them);
- what changed in the sound: the audio length of clause + rest against the whole sentence,
  the pause at the cut (trailing + leading silence), and Whisper's WER on both versions.
Prints a table and writes bench-results/first-audio-YYYYmmdd-HHMMSS.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REPLIES = [
    "The sky on a clear day is blue, because the air scatters blue sunlight more than red light.",
    "Paris is usually mild in spring, with cool mornings and sunny afternoons. Take a light jacket.",
    "The moon is about three hundred and eighty four thousand kilometres away, on average.",
    "Pride and Prejudice was written by Jane Austen, and it was published in eighteen thirteen.",
    "I can't set timers yet, but you could use the clock app on your phone for that.",
    "Once upon a time, a brave little dog named Max saved his family from a fire. Everyone cheered.",
]
QUIET = 300  # |sample| below this counts as silence when measuring the pause at a cut


def _silence_ms(pcm: np.ndarray, rate: int, leading: bool) -> float:
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) >= QUIET)[0]
    if not len(loud):
        return len(pcm) / rate * 1000
    n = loud[0] if leading else len(pcm) - 1 - loud[-1]
    return n / rate * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.first_audio", description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args(argv)

    from bench.report import table
    from bench.scenarios import machine
    from bench.stats import summarize
    from services.stt.whisper import WhisperStt
    from services.tts.piper import PiperTts
    from shared.model import SttRequest, TtsRequest
    from shared.sentences import SentenceSplitter
    from tests.support.speech import wer

    tts = PiperTts()
    asyncio.run(tts.load())
    stt = WhisperStt()
    asyncio.run(stt.load())

    def units(text: str, clause: bool) -> list[str]:
        s = SentenceSplitter(first_clause_words=4 if clause else 0)
        return s.feed(text) + s.flush()

    def synth(text: str) -> tuple[float, np.ndarray]:
        async def go() -> tuple[float, bytes]:
            t0 = time.perf_counter()
            first = None
            pcm = b""
            async for chunk in tts.infer(TtsRequest(text)):
                first = first if first is not None else time.perf_counter() - t0
                pcm += chunk.pcm
            return (first or 0.0) * 1000, pcm

        ms, pcm = asyncio.run(go())
        return ms, np.frombuffer(pcm, dtype="<i2")

    def best(text: str) -> tuple[float, np.ndarray]:
        runs = [synth(text) for _ in range(args.repeat)]
        return min(r[0] for r in runs), runs[0][1]

    def heard(pcm: np.ndarray) -> str:
        from services.stt.whisper import WHISPER_RATE

        t = np.arange(0, len(pcm) * WHISPER_RATE / rate) * rate / WHISPER_RATE
        pcm16 = np.interp(t, np.arange(len(pcm)), pcm).astype("<i2").tobytes()
        return stt.transcribe(SttRequest(pcm16, WHISPER_RATE))

    rate = tts.sample_rate
    synth("Warm up.")
    rows = []
    for reply in REPLIES:
        whole, cut = units(reply, False), units(reply, True)
        if whole == cut:
            continue
        s_ms, s_pcm = best(whole[0])
        c_ms, c_pcm = best(cut[0])
        r_ms, r_pcm = best(cut[1])
        rest = len(whole[0]) > len(cut[0]) and whole[0].startswith(cut[0])
        joined = np.concatenate([c_pcm, r_pcm]) if rest else None
        row = {
            "reply": reply,
            "first_sentence": whole[0],
            "first_clause": cut[0],
            "sentence_first_chunk_ms": round(s_ms, 1),
            "clause_first_chunk_ms": round(c_ms, 1),
            "clause_audio_ms": round(len(c_pcm) / rate * 1000),
            "next_unit_synth_ms": round(r_ms, 1),
        }
        if joined is not None:
            row |= {
                "sentence_audio_ms": round(len(s_pcm) / rate * 1000),
                "clause_plus_rest_audio_ms": round(len(joined) / rate * 1000),
                "pause_at_cut_ms": round(
                    _silence_ms(c_pcm, rate, leading=False) + _silence_ms(r_pcm, rate, leading=True)
                ),
                "wer_sentence": round(wer(whole[0], heard(s_pcm)), 3),
                "wer_clause_plus_rest": round(wer(whole[0], heard(joined)), 3),
            }
        rows.append(row)

    def col(k: str) -> list:
        return [r.get(k) for r in rows if r.get(k) is not None]

    print(
        table(
            ["first unit", "first chunk ms", "audio ms", "next unit synth ms"],
            [
                [r["first_clause"][:48], r["clause_first_chunk_ms"], r["clause_audio_ms"]]
                + [r["next_unit_synth_ms"]]
                for r in rows
            ]
            + [
                [r["first_sentence"][:48], r["sentence_first_chunk_ms"], r.get("sentence_audio_ms"), None]
                for r in rows
            ],
            "First audio: Piper joe, first clause (top) against first sentence (bottom)",
        )
    )
    summary = {
        "clause_first_chunk_ms": summarize(col("clause_first_chunk_ms"), 1),
        "sentence_first_chunk_ms": summarize(col("sentence_first_chunk_ms"), 1),
        "saved_ms": summarize([r["sentence_first_chunk_ms"] - r["clause_first_chunk_ms"] for r in rows], 1),
        "gap_risk": sum(1 for r in rows if r["next_unit_synth_ms"] >= r["clause_audio_ms"]),
        "audio_length_change_ms": summarize(
            [r["clause_plus_rest_audio_ms"] - r["sentence_audio_ms"] for r in rows if "wer_sentence" in r],
            1,
        ),
        "pause_at_cut_ms": summarize(col("pause_at_cut_ms"), 1),
        "wer_sentence": summarize(col("wer_sentence"), 3),
        "wer_clause_plus_rest": summarize(col("wer_clause_plus_rest"), 3),
    }
    print(json.dumps(summary, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"first-audio-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), "rows": rows, "summary": summary}, indent=1))
    print(f"bench.first_audio: results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
