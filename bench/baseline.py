"""Scenario d: the same stub turn as direct calls in one process, no Redis and no sockets.

Per 20 ms frame it does what the orchestrator does (buffer the PCM, scale to float, cut
512-sample windows, one batched Silero call per tick for every session with a window ready,
the `EndpointDetector`); at the end-of-turn decision it runs the stub STT on the turn's
audio, streams the stub LLM through the `SentenceSplitter` and takes the stub TTS's first
chunk (what would be written to the socket). Two figures:

- latency: decision frame handed in -> first reply audio chunk ready, one session;
- CPU: process CPU seconds per session per second of audio, with `sessions` sessions in
  lockstep (batched VAD, like the orchestrator), run as fast as the CPU allows; its inverse
  is how many real-time sessions one core could carry in-process.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from bench.audio import Clip
from bench.loadgen import make_plans
from bench.stats import FRAME, RATE, WINDOW, summarize
from shared.model import LlmRequest, SttRequest, TtsRequest
from shared.sentences import SentenceSplitter


class _Session:
    def __init__(self, vad, endpoint, samples: np.ndarray) -> None:
        from services.orchestrator.endpoint import EndpointDetector
        from services.orchestrator.pipeline import PipelineContext

        self.samples = samples
        self.frames = [samples[i : i + FRAME].astype("<i2").tobytes() for i in range(0, len(samples), FRAME)]
        self.ctx = PipelineContext(sample_rate=RATE)
        self.stream = vad.new_stream()
        self.detector = EndpointDetector(endpoint)
        self.first_audio: list[float] = []  # latency of each turn, seconds

    def on_frame(self, pcm: bytes, ts: float, ready: list) -> None:
        ctx = self.ctx
        ctx.append(pcm, ts)
        for w in ctx.vad_windows(pcm, WINDOW):
            ready.append((self, w))
        if not self.detector.in_speech:
            keep = ctx.ms_to_sample(
                self.detector.config.pre_roll_ms + self.detector.config.min_speech_ms + 600
            )
            if ctx.samples_in - ctx.audio_start > 3 * keep:
                ctx.keep_from(ctx.samples_in - keep)


async def _reply(pcm: bytes, stt, llm, tts) -> bytes:
    """STT -> LLM (streamed through the sentence splitter) -> the first TTS chunk."""
    text = ""
    async for t in stt.infer(SttRequest(pcm, RATE)):
        text = (text + " " + t.text).strip()
    splitter = SentenceSplitter()
    first: str | None = None
    async for d in llm.infer(LlmRequest(messages=[{"role": "user", "content": text}])):
        for s in splitter.feed(d.text):
            first = first or s
        if first:
            break
    if first is None:
        first = next(iter(splitter.flush()), "")
    async for chunk in tts.infer(TtsRequest(first)):
        return bytes((0x01,)) + chunk.pcm  # the frame a gateway would send
    return b""


async def _run(sessions: list[_Session], vad, on_turn) -> None:
    from services.orchestrator.endpoint import TurnEnd

    ticks = max(len(s.frames) for s in sessions)
    for j in range(ticks):
        ready: list = []
        t_frame = time.perf_counter()
        for s in sessions:
            if j < len(s.frames):
                s.on_frame(s.frames[j], t_frame, ready)
        while ready:  # one window per session per call, as the orchestrator does
            seen: set[int] = set()
            now, later = [], []
            for item in ready:
                (later if id(item[0]) in seen else now).append(item)
                seen.add(id(item[0]))
            probs = vad.process([s.stream for s, _ in now], np.stack([w for _, w in now]))
            for (s, _), prob in zip(now, probs, strict=True):
                for ev in s.detector.feed(float(prob)):
                    if isinstance(ev, TurnEnd):
                        ctx = s.ctx
                        a = ctx.ms_to_sample(ev.start_ms - s.detector.config.pre_roll_ms)
                        b = ctx.ms_to_sample(ev.end_ms + s.detector.config.post_roll_ms)
                        pcm = ctx.slice(a, b)
                        ctx.keep_from(b)
                        await on_turn(s, pcm, t_frame)
            ready = later


def _on_turn():
    from services.llm.stub import StubLlm
    from services.stt.stub import StubStt
    from services.tts.stub import StubTts

    stt, llm, tts = StubStt(), StubLlm(), StubTts()

    async def on_turn(s: _Session, pcm: bytes, t_frame: float) -> None:
        frame = await _reply(pcm, stt, llm, tts)
        if frame:
            s.first_audio.append(time.perf_counter() - t_frame)

    return on_turn


def run_baseline(clip: Clip, opts, endpoint, vad, sessions: int = 50) -> dict:
    import random

    # latency: one session, as many turns as scenario a
    plan = make_plans(1, opts.a_turns, clip, opts.gap_s, random.Random(opts.seed))[0]
    one = _Session(vad, endpoint, plan.samples(clip))
    asyncio.run(_run([one], vad, _on_turn()))
    return {
        "framework_ms": summarize([x * 1000 for x in one.first_audio], 3),
        "turns": len(one.first_audio),
        **baseline_cpu(clip, opts, endpoint, vad, sessions),
    }


def baseline_cpu(clip: Clip, opts, endpoint, vad, sessions: int = 50) -> dict:
    """The CPU figure alone: `sessions` sessions (`opts.turns` turns each) in lockstep, as
    fast as the CPU allows; process CPU seconds per second of audio per session."""
    import random

    on_turn = _on_turn()
    plans = make_plans(sessions, opts.turns, clip, opts.gap_s, random.Random(opts.seed + 1))
    many = [_Session(vad, endpoint, p.samples(clip)) for p in plans]
    audio_s = sum(len(s.samples) for s in many) / RATE
    c0, w0 = time.process_time(), time.perf_counter()
    asyncio.run(_run(many, vad, on_turn))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    per_session = cpu / audio_s  # cores per real-time session
    turns = sum(len(s.first_audio) for s in many)
    return {
        "cpu_sessions": sessions,
        "cpu_audio_s": round(audio_s, 1),
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "cpu_turns": turns,
        "cores_per_session": round(per_session, 5),
        "sessions_per_core": round(1 / per_session, 1) if per_session else None,
    }
