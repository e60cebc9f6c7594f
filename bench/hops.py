"""Where a turn's time goes, hop by hop, without instrumenting the services.

Every Redis stream entry id starts with the Redis server's clock in ms when it was added,
and most hops of a turn leave an entry: the gateway XADDs the audio it scored to `in:{sid}`
(stamped with when it received the frame that completed it), the workers XADD their results
to `in:{sid}`, the follow-up jobs to `jobs:llm` / `jobs:tts` and the audio to `out:{sid}`.
Read back after a run (before the stack stops), they give each turn's timeline at 1 ms
resolution, relative to the moment the client sent the frame that completed the end-of-turn
decision. The orchestrator's own hop (`jobs:stt`) leaves nothing to read: an STT job is
deleted with its audio once done. `in:{sid}` is trimmed as turns are answered, so the hops read
from it (the scored frame, the transcript, the tokens) are mostly the sessions' last turns.
"""

from __future__ import annotations

from shared import codec
from shared.messages import (
    Audio,
    AudioOut,
    LlmDone,
    LlmJob,
    LlmToken,
    ScoredAudio,
    SttResult,
    TtsJob,
    in_stream,
    jobs_stream,
    out_stream,
)
from shared.redis_url import sync_client

HOPS = (
    ("frame_in_redis", "client -> gateway -> Silero -> XADD in:{sid}"),
    ("stt_result", "orchestrator: end of turn, XADD jobs:stt; stt worker: STT, the result"),
    ("llm_job", "stt worker: the LLM job, with the result"),
    ("llm_first_token", "llm worker: takes the job, first token written"),
    ("llm_done", "llm worker: the rest of the reply, then done"),
    ("tts_job", "llm worker: first sentence closed, XADD jobs:tts"),
    ("tts_first_audio", "tts worker: takes the job, first audio chunk written"),
    ("client_first_audio", "gateway: XREAD out:{sid}, WebSocket -> client"),
)


def _ms(eid: bytes) -> int:
    return int(eid.split(b"-", 1)[0])


def _entries(r, stream: str) -> list[tuple[int, object]]:
    out = []
    for eid, fields in r.xrange(stream, "-", "+"):
        try:
            out.append((_ms(eid), codec.from_entry(fields)))
        except codec.CodecError:
            continue
    return out


def collect(redis_url: str, sid: str) -> dict:
    """The raw per-turn timestamps (ms) of one session, read from Redis."""

    r = sync_client(redis_url)
    try:
        inn = _entries(r, in_stream(sid))
        out = _entries(r, out_stream(sid))
        jobs = {
            k: [(t, m) for t, m in _entries(r, jobs_stream(k)) if getattr(m, "sid", None) == sid]
            for k in ("llm", "tts")
        }
    finally:
        r.close()
    # (entry ms, ms the gateway received the frame that completed it), in stream order
    audio_ms = [(t, m.ts * 1000) for t, m in inn if isinstance(m, Audio | ScoredAudio)]
    turns: dict[int, dict] = {}

    def first(n: int, key: str, t: int) -> None:
        turns.setdefault(n, {}).setdefault(key, t)

    for t, m in inn:
        if isinstance(m, SttResult) and m.final:
            turns.setdefault(m.turn, {})["stt_result"] = t
        elif isinstance(m, LlmToken):
            first(m.turn, "llm_first_token", t)
        elif isinstance(m, LlmDone):
            first(m.turn, "llm_done", t)
    for t, m in jobs["llm"]:
        if isinstance(m, LlmJob):
            turns.setdefault(m.turn, {})["llm_job"] = t
    for t, m in jobs["tts"]:
        if isinstance(m, TtsJob) and m.seq == 0:
            first(m.turn, "tts_job", t)
    for t, m in out:
        if isinstance(m, AudioOut):
            first(m.turn, "tts_first_audio", t)
    return {"audio_ms": audio_ms, "turns": turns}


def breakdown(raw: dict, sent: list[float], turn_frames: list[tuple[int, int, float]]) -> list[dict]:
    """Per analysed turn: ms from the decision frame's send time to each hop.

    `turn_frames`: (server turn number, decision frame index, client first-audio time)."""
    audio_ms = raw["audio_ms"]
    rows = []
    for n, frame, t_client in turn_frames:
        hops = raw["turns"].get(n)
        if not hops:
            continue
        t0 = sent[frame] * 1000
        row = {"turn": n}
        # the first audio entry the gateway stamped after the frame was sent holds its window
        # (frames arrive in order; an earlier frame read late can make this a little early)
        landed = next((t for t, ts in audio_ms if ts >= t0), None)
        if landed is not None and landed <= t_client * 1000:  # else trimmed: a later turn's audio
            row["frame_in_redis"] = landed - t0
        for key, _ in HOPS[1:-1]:
            if key in hops:
                row[key] = hops[key] - t0
        row["client_first_audio"] = t_client * 1000 - t0
        rows.append(row)
    return rows
