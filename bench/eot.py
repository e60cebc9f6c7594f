"""Scenario eot: end-of-turn strategies on a labelled corpus, through the real Silero VAD and the
real policy (`python -m bench --scenario eot`).

Every clip of `bench.eot_corpus` is one thought: the ideal is exactly one turn, decided soon
after the last word. Each clip is scored by Silero VAD once (16 kHz int16 scaled to float,
512-sample windows, all clips batched as the orchestrator batches sessions); then for each
strategy a fresh `EndOfTurnPolicy` is fed those probabilities window by window. When it asks
for a score (`ScoreNeeded`), the bench computes it as the stack would, from the audio the
orchestrator holds at that moment (the turn from 200 ms before its start up to `at_ms`):

* Smart Turn v3.2 (`services.orchestrator.smart_turn`) on that audio;
* a partial transcript of it by the CPU profile's Whisper base (`services.stt.whisper`,
  greedy partial decode), read by `transcript_cue`.

The score is delivered back to the policy at `at_ms` + the measured wall time of computing it
(both, when a strategy reads both: they run in parallel in the stack), so a slow score arrives
late exactly as it would, and speech that resumed meanwhile makes it stale. Scores are cached
per (clip, turn start, at_ms): strategies that ask the same question share one computation.

Per strategy: **false cut-offs** (a clip split into two or more turns: the user was cut off
mid-thought), **late ends** (the turn was decided more than `LATE_MS` after the last word),
**missed** (no turn), **noise turns** (a turn wholly outside the speech), the **end-of-turn
delay** (decision time - last speech sample) p50 / p95 over every clip's final turn, and the
**CPU per decision** (process CPU time of the scores it asked for, divided by the number asked).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.eot_corpus import LEAD_IN_S, RATE, Utterance, load_corpus
from bench.stats import summarize

LATE_MS = 1000  # a turn decided later than this after the last word feels slow
PRE_ROLL_MS = 200  # the orchestrator keeps this much audio before a turn's start (session.PRE_ROLL_MS)
WINDOW = 512
CANDIDATE_MS = 224
CEILING_MS = 1504
COST_BATCH = 8


@dataclass(frozen=True)
class Strategy:
    name: str
    mode: str
    end_silence_ms: float = 288  # silence mode
    candidate_ms: float = CANDIDATE_MS
    ceiling_ms: float = CEILING_MS
    threshold: float = 0.5
    text_latency_ms: float | None = None  # None: the measured STT time; else this (modelled)
    note: str = ""


STRATEGIES = (
    Strategy("silence 288 ms (today)", "silence", 288, note="today's default"),
    Strategy("silence 512 ms", "silence", 512),
    Strategy("silence 800 ms", "silence", 800),
    Strategy("silence 1504 ms", "silence", 1504, note="the ceiling alone"),
    Strategy("smart turn", "smart_turn"),
    Strategy("smart turn p>=0.7", "smart_turn", threshold=0.7),
    Strategy("transcript cues", "transcript"),
    Strategy("smart turn unless cue", "smart_turn_unless_cue"),
    Strategy("cue else smart turn", "cue_else_smart_turn"),
    # the same decisions with a GPU-class STT: latency modelled, not measured here
    Strategy("transcript cues, STT 150 ms*", "transcript", text_latency_ms=150, note="modelled STT latency"),
    Strategy(
        "smart turn unless cue, STT 150 ms*", "smart_turn_unless_cue", text_latency_ms=150, note="modelled"
    ),
    Strategy("cue else smart turn, STT 150 ms*", "cue_else_smart_turn", text_latency_ms=150, note="modelled"),
)


@dataclass
class Score:
    value: float | str  # Smart Turn probability, or the transcript
    wall_ms: float
    cpu_ms: float


@dataclass
class ClipResult:
    key: str
    kind: str
    noisy: bool
    turns: int  # turns that overlap the speech
    noise_turns: int
    delay_ms: float | None  # decision time of the final turn - last speech sample
    # when the final turn's transcript is in hand, if a score already transcribed all of it
    held_transcript_ms: float | None
    decisions: int
    cpu_ms: float
    asked: list[dict] = field(default_factory=list)  # every score asked for: when, what came back


class Scorer:
    """Smart Turn and partial-transcript scores of a pause, computed once and cached."""

    def __init__(self, smart_turn, stt) -> None:
        self.smart_turn = smart_turn
        self.stt = stt
        self._audio: dict[tuple, Score] = {}
        self._text: dict[tuple, Score] = {}

    @staticmethod
    def _slice(utt: Utterance, start_ms: float, at_ms: float) -> np.ndarray:
        a = max(0, int((start_ms - PRE_ROLL_MS) * RATE / 1000))
        return utt.samples[a : int(at_ms * RATE / 1000)]

    def audio(self, utt: Utterance, start_ms: float, at_ms: float) -> Score:
        key = (utt.key, start_ms, at_ms)
        if key not in self._audio:
            clip = self._slice(utt, start_ms, at_ms)
            t, c = time.perf_counter(), time.process_time()
            p = self.smart_turn.predict_one(clip)
            self._audio[key] = Score(p, (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)
        return self._audio[key]

    def text(self, utt: Utterance, start_ms: float, at_ms: float) -> Score:
        from shared.model import SttRequest

        key = (utt.key, start_ms, at_ms)
        if key not in self._text:
            pcm = self._slice(utt, start_ms, at_ms).astype("<i2").tobytes()
            t, c = time.perf_counter(), time.process_time()
            text = self.stt.transcribe(SttRequest(pcm=pcm, sample_rate=RATE, partial=True))
            self._text[key] = Score(text, (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)
        return self._text[key]


def vad_probabilities(utts: list[Utterance], vad) -> list[np.ndarray]:
    """Silero probabilities of every clip's windows, all clips batched per window step."""
    signals = []
    for u in utts:
        x = u.samples.astype(np.float32) * (1 / 32768)
        signals.append(np.concatenate([x, np.zeros(-len(x) % WINDOW, np.float32)]))
    streams = [vad.new_stream() for _ in utts]
    n = [len(s) // WINDOW for s in signals]
    out = [np.zeros(k, np.float32) for k in n]
    for w in range(max(n, default=0)):
        live = [i for i, k in enumerate(n) if w < k]
        batch = np.stack([signals[i][w * WINDOW : (w + 1) * WINDOW] for i in live])
        probs = vad.process([streams[i] for i in live], batch)
        for i, p in zip(live, probs, strict=True):
            out[i][w] = p
    return out


def replay(strategy: Strategy, utt: Utterance, probs: np.ndarray, scorer: Scorer, endpoint) -> ClipResult:
    """Feed one clip's probabilities to a fresh policy; deliver each score when it would arrive."""

    from services.orchestrator.end_of_turn import EndOfTurnConfig, EndOfTurnPolicy, ScoreNeeded
    from services.orchestrator.endpoint import TurnEnd

    cfg = EndOfTurnConfig(
        mode=strategy.mode,  # type: ignore[arg-type]
        candidate_ms=strategy.candidate_ms,
        ceiling_ms=strategy.ceiling_ms,
        complete_threshold=strategy.threshold,
    )
    pol = EndOfTurnPolicy(endpoint.model_copy(update={"end_silence_ms": strategy.end_silence_ms}), cfg)
    window_ms = pol.endpoint.window_ms
    inflight: list[tuple[float, ScoreNeeded, float | None, str | None]] = []
    ends: list[tuple[TurnEnd, float]] = []  # (event, decided at, stream ms)
    asked: list[dict] = []
    cpu = 0.0
    for w, p in enumerate(probs):
        now = (w + 1) * window_ms
        for item in [x for x in inflight if x[0] < now]:
            inflight.remove(item)
            due, ev, audio, text = item
            ends += [(e, due) for e in pol.score(ev.request, audio=audio, text=text)]
        for ev in pol.feed(float(p)):
            if isinstance(ev, TurnEnd):
                ends.append((ev, now))
            elif isinstance(ev, ScoreNeeded):
                a = scorer.audio(utt, ev.start_ms, ev.at_ms) if ev.audio else None
                t = scorer.text(utt, ev.start_ms, ev.at_ms) if ev.text else None
                text_ms = (
                    None
                    if t is None
                    else strategy.text_latency_ms
                    if strategy.text_latency_ms is not None
                    else t.wall_ms
                )
                latency = max(x for x in (a and a.wall_ms, text_ms) if x is not None)
                cpu += sum(s.cpu_ms for s in (a, t) if s is not None)
                audio = float(a.value) if a is not None else None
                text = str(t.value) if t is not None else None
                inflight.append((ev.at_ms + latency, ev, audio, text))
                asked.append(
                    {
                        "start_ms": ev.start_ms,
                        "end_ms": ev.end_ms,
                        "at_ms": ev.at_ms,
                        "more_speech_after": ev.end_ms < utt.speech_end_ms - 300,
                        "smart_turn": None if audio is None else round(audio, 3),
                        "text": text,
                        "latency_ms": round(latency, 1),
                        "text_at_ms": None if text_ms is None else round(ev.at_ms + text_ms, 1),
                        "stt_wall_ms": None if t is None else round(t.wall_ms, 1),
                    }
                )
    speech_start_ms = LEAD_IN_S * 1000  # every clip's speech starts after its lead-in
    speech = [(e, d) for e, d in ends if e.end_ms > speech_start_ms and e.start_ms < utt.speech_end_ms]
    noise = len(ends) - len(speech)
    delay = held = None
    if speech:
        final, decided = speech[-1]
        delay = decided - utt.speech_end_ms
        texts = [
            a["text_at_ms"]
            for a in asked
            if a["text_at_ms"] is not None and (a["start_ms"], a["end_ms"]) == (final.start_ms, final.end_ms)
        ]
        if texts:
            held = max(decided, texts[-1]) - utt.speech_end_ms
    return ClipResult(
        utt.key, utt.kind, utt.noise is not None, len(speech), noise, delay, held, len(asked), cpu, asked
    )


def transcript_ready(r: ClipResult, stt_ms: dict[str, float]) -> float | None:
    """ms after the last word at which the final turn's transcript is in hand: held from a
    score, or the decision + the clip's STT time (the same greedy decode, measured once)."""
    if r.held_transcript_ms is not None:
        return r.held_transcript_ms
    if r.delay_ms is None or r.key not in stt_ms:
        return None
    return r.delay_ms + stt_ms[r.key]


def summarize_strategy(strategy: Strategy, results: list[ClipResult], stt_ms: dict[str, float]) -> dict:
    paused = [r for r in results if r.kind == "paused"]
    complete = [r for r in results if r.kind == "complete"]
    delays = [r.delay_ms for r in results if r.delay_ms is not None]
    decisions = sum(r.decisions for r in results)
    return {
        "strategy": strategy.name,
        "mode": strategy.mode,
        "end_silence_ms": strategy.end_silence_ms if strategy.mode == "silence" else None,
        "candidate_ms": strategy.candidate_ms if strategy.mode != "silence" else None,
        "ceiling_ms": strategy.ceiling_ms if strategy.mode != "silence" else None,
        "threshold": strategy.threshold
        if strategy.mode in ("smart_turn", "smart_turn_unless_cue", "cue_else_smart_turn")
        else None,
        "clips": len(results),
        "cut_off_paused": sum(r.turns > 1 for r in paused),
        "paused_clips": len(paused),
        "cut_off_complete": sum(r.turns > 1 for r in complete),
        "complete_clips": len(complete),
        "late": sum(d > LATE_MS for d in delays),
        "missed": sum(r.turns == 0 for r in results),
        "noise_turns": sum(r.noise_turns for r in results),
        "delay_ms": summarize(delays, 0),
        "delay_clean_ms": summarize(
            [r.delay_ms for r in results if r.delay_ms is not None and not r.noisy], 0
        ),
        "delay_noisy_ms": summarize([r.delay_ms for r in results if r.delay_ms is not None and r.noisy], 0),
        "transcript_ready_ms": summarize(
            [x for r in results if (x := transcript_ready(r, stt_ms)) is not None], 0
        ),
        "decisions": decisions,
        "cpu_ms_per_decision": round(sum(r.cpu_ms for r in results) / decisions, 1) if decisions else 0.0,
        "score_latency_ms": summarize([a["latency_ms"] for r in results for a in r.asked], 0),
        "note": strategy.note,
    }


def signal_accuracy(results: list[ClipResult], utts: dict[str, Utterance], field_name: str) -> dict:
    """How often one signal was right at the pauses it was asked about (truth: is there more
    speech after this pause?). `field_name`: "smart_turn" or "cue"."""
    from services.orchestrator.transcript_cues import transcript_cue

    mid_wrong, end_wrong, mid, end, unknown = [], [], 0, 0, 0
    for r in results:
        for a in r.asked:
            if field_name == "smart_turn":
                says_complete = a["smart_turn"] >= 0.5
            else:
                cue = transcript_cue(a["text"] or "")
                if cue == "unknown":
                    unknown += 1
                says_complete = cue == "complete"
            where = {"clip": r.key, "at_ms": a["at_ms"], "smart_turn": a["smart_turn"], "text": a["text"]}
            if a["more_speech_after"]:
                mid += 1
                if says_complete:
                    mid_wrong.append(where)
            else:
                end += 1
                if not says_complete:
                    end_wrong.append(where)
    return {
        "mid_thought_pauses": mid,
        "said_complete_at_mid_thought": len(mid_wrong),
        "utterance_ends": end,
        "said_incomplete_at_end": len(end_wrong),
        "no_opinion": unknown,
        "wrong_mid": mid_wrong,
        "wrong_end": end_wrong,
    }


def smart_turn_cost(model, clip: np.ndarray, repeats: int = 7) -> dict:
    """Wall and CPU time of one Smart Turn call and of one batch of COST_BATCH (features
    included), median of `repeats`. `thread_cpu_ms` is the calling thread's own work (the
    model runs on it, onnxruntime with one thread); `process_cpu_ms` adds what other threads
    of the process burnt meanwhile (numpy's BLAS threads spin after the mel product unless
    OPENBLAS_NUM_THREADS=1)."""
    out: dict = {}
    for n in (1, COST_BATCH):
        clips = [clip] * n
        model.predict(clips)  # warm
        walls, threads, procs = [], [], []
        for _ in range(repeats):
            t, c, th = time.perf_counter(), time.process_time(), time.thread_time()
            model.predict(clips)
            walls.append((time.perf_counter() - t) * 1000)
            threads.append((time.thread_time() - th) * 1000)
            procs.append((time.process_time() - c) * 1000)
        out[f"batch_{n}"] = {
            "wall_ms": round(statistics.median(walls), 1),
            "thread_cpu_ms": round(statistics.median(threads), 1),
            "process_cpu_ms": round(statistics.median(procs), 1),
            "thread_cpu_ms_per_clip": round(statistics.median(threads) / n, 1),
        }
    t = time.perf_counter()
    for _ in range(repeats):
        model.features(clip)
    out["features_ms"] = round((time.perf_counter() - t) * 1000 / repeats, 1)
    return out


def density_projection(
    cost: dict, decisions_per_turn: float, sessions: int = 100, turn_s: float = 3.62
) -> dict:
    """Cores Smart Turn needs for `sessions` talking without a break, one turn every `turn_s`
    (bench b's pace: a 2.12 s question and 1.5 s of silence), at the batch-of-8 cost per clip."""
    per_clip = cost[f"batch_{COST_BATCH}"]["thread_cpu_ms_per_clip"]
    calls_per_s = sessions / turn_s * decisions_per_turn
    return {
        "sessions": sessions,
        "turn_every_s": turn_s,
        "calls_per_turn": round(decisions_per_turn, 2),
        "calls_per_s": round(calls_per_s, 1),
        "cores": round(calls_per_s * per_clip / 1000, 2),
        "machine_cores": os.cpu_count(),
    }


def _whisper():
    from services.stt.whisper import WhisperStt

    stt = WhisperStt()
    asyncio.run(stt.load())
    return stt


def _word_times_fn(stt):
    def word_times(samples: np.ndarray) -> list[tuple[str, float, float]]:
        audio = samples.astype(np.float32) / 32768
        segments, _ = stt._model.transcribe(
            audio,
            language="en",
            beam_size=5,
            word_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        return [(w.word, w.start, w.end) for seg in segments for w in (seg.words or [])]

    return word_times


def scenario_eot(out_dir: Path, endpoint, vad, log=print) -> dict:
    from services.orchestrator.smart_turn import SmartTurn

    t0 = time.monotonic()
    model = SmartTurn()
    stt = _whisper()
    utts = load_corpus(out_dir / "cache", _word_times_fn(stt), log)
    t_corpus = time.monotonic() - t0
    log(f"  eot: {len(utts)} clips ({sum(u.kind == 'paused' for u in utts)} with a mid-thought pause) ...")
    probs = vad_probabilities(utts, vad)
    scorer = Scorer(model, stt)
    per_clip = {}
    for s in STRATEGIES:
        t = time.monotonic()
        per_clip[s.name] = [replay(s, u, p, scorer, endpoint) for u, p in zip(utts, probs, strict=True)]
        log(f"  eot: {s.name}: {time.monotonic() - t:.1f} s")
    # each clip's STT time: the greedy decode of its whole utterance at its final pause
    stt_ms = {
        r.key: finals[-1]
        for r in per_clip["transcript cues"]
        if (finals := [a["stt_wall_ms"] for a in r.asked if not a["more_speech_after"]])
    }
    rows = [summarize_strategy(s, per_clip[s.name], stt_ms) for s in STRATEGIES]
    by_key = {u.key: u for u in utts}
    smart = per_clip["smart turn"]
    cues = per_clip["transcript cues"]
    cost = smart_turn_cost(model, utts[0].samples)
    calls_per_turn = sum(r.decisions for r in smart) / len(smart)
    return {
        "scenario": "eot",
        "corpus": {
            "clips": len(utts),
            "paused": sum(u.kind == "paused" for u in utts),
            "complete": sum(u.kind == "complete" for u in utts),
            "noisy": sum(u.noise is not None for u in utts),
            "voices": sorted({u.voice for u in utts}),
            "making_s": round(t_corpus, 1),
        },
        "endpoint": {
            k: getattr(endpoint, k) for k in ("threshold", "neg_threshold", "min_speech_ms", "window_ms")
        },
        "late_ms": LATE_MS,
        "strategies": rows,
        "smart_turn_accuracy": signal_accuracy(smart, by_key, "smart_turn"),
        "cue_accuracy": signal_accuracy(cues, by_key, "cue"),
        "smart_turn_cost": cost,
        "smart_turn_density": density_projection(cost, calls_per_turn),
        "stt_ms": summarize(stt_ms.values(), 0),
        "per_clip": {
            name: [
                {
                    "clip": r.key,
                    "turns": r.turns,
                    "noise_turns": r.noise_turns,
                    "delay_ms": r.delay_ms,
                    "asked": r.asked,
                }
                for r in results
            ]
            for name, results in per_clip.items()
            if name
            in (
                "silence 288 ms (today)",
                "smart turn",
                "transcript cues",
                "smart turn unless cue",
                "cue else smart turn",
            )
        },
        "elapsed_s": round(time.monotonic() - t0, 1),
    }


def render_eot(r: dict) -> str:
    from bench.report import table

    if "error" in r:
        return f"eot) ERROR: {r['error']}"
    c = r["corpus"]
    rows = []
    for s in r["strategies"]:
        rows.append(
            [
                s["strategy"],
                f"{s['cut_off_paused']}/{s['paused_clips']}",
                f"{s['cut_off_complete']}/{s['complete_clips']}",
                s["late"],
                s["missed"],
                s["delay_ms"]["p50"],
                s["delay_ms"]["p95"],
                s["delay_noisy_ms"]["p50"],
                s["transcript_ready_ms"]["p50"],
                s["transcript_ready_ms"]["p95"],
                s["decisions"],
                s["cpu_ms_per_decision"],
            ]
        )
    headers = [
        "strategy",
        "cut off: paused",
        "whole",
        f"late >{r['late_ms']}",
        "missed",
        "end p50",
        "p95",
        "noisy p50",
        "transcript p50",
        "p95",
        "scores",
        "CPU ms/score",
    ]
    title = (
        f"eot) end of turn on {c['clips']} clips ({c['paused']} with a 0.4-1.2 s mid-thought pause, "
        f"{c['noisy']} over noise; voices {', '.join(c['voices'])}); ms after the last word; "
        "* = STT latency modelled"
    )
    out = [table(headers, rows, title)]
    for name, key in (("Smart Turn", "smart_turn_accuracy"), ("transcript cues", "cue_accuracy")):
        a = r[key]
        out.append(
            f"  {name}: said 'complete' at {a['said_complete_at_mid_thought']}/{a['mid_thought_pauses']} "
            f"mid-thought pauses; 'incomplete' or no opinion at {a['said_incomplete_at_end']}/"
            f"{a['utterance_ends']} utterance ends"
        )
    cost, dens = r["smart_turn_cost"], r["smart_turn_density"]
    one, batch = cost["batch_1"], cost[f"batch_{COST_BATCH}"]
    out.append(
        f"  Smart Turn cost: one call {one['wall_ms']} ms wall, {one['thread_cpu_ms']} ms CPU on its thread "
        f"({one['process_cpu_ms']} ms process); a batch of {COST_BATCH}: {batch['wall_ms']} ms wall, "
        f"{batch['thread_cpu_ms_per_clip']} ms CPU per clip; features {cost['features_ms']} ms"
    )
    out.append(
        f"  Smart Turn at {dens['sessions']} sessions (a turn each every {dens['turn_every_s']} s, "
        f"{dens['calls_per_turn']} calls per turn): {dens['calls_per_s']} calls/s = {dens['cores']} cores "
        f"of this machine's {dens['machine_cores']}"
    )
    out.append(f"  STT (Whisper base, greedy partial) of a whole utterance: p50 {r['stt_ms']['p50']} ms wall")
    return "\n".join(out)
