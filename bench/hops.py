"""Where a turn's time goes, hop by hop, without instrumenting the services.

Every Redis stream entry id starts with the Redis server's clock in ms when it was added,
and every hop of a turn leaves an entry: the gateway XADDs each audio frame to `in:{sid}`,
the orchestrator XADDs `jobs:stt` / `jobs:llm` / `jobs:tts`, the workers XADD their results to
`in:{sid}` and the audio to `out:{sid}`. Read back after a run (before the stack stops), they
give each turn's timeline at 1 ms resolution, relative to the moment the client sent the
frame that completed the end-of-turn decision.
"""

from __future__ import annotations

from shared import codec
from shared.messages import (
    Audio,
    AudioOut,
    LlmDone,
    LlmJob,
    LlmToken,
    SttJob,
    SttResult,
    TtsJob,
    in_stream,
    jobs_stream,
    out_stream,
)
from shared.redis_url import sync_client

HOPS = (
    ("frame_in_redis", "client -> gateway -> XADD in:{sid}"),
    ("stt_job", "orchestrator: XREAD, VAD, end of turn, XADD jobs:stt"),
    ("stt_result", "stt worker: takes the job, STT, writes the result"),
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
            for k in ("stt", "llm", "tts")
        }
    finally:
        r.close()
    audio_ms = [t for t, m in inn if isinstance(m, Audio)]
    turns: dict[int, dict] = {}

    def first(n: int, key: str, t: int) -> None:
        turns.setdefault(n, {}).setdefault(key, t)

    for t, m in jobs["stt"]:
        if isinstance(m, SttJob) and not m.partial:
            turns.setdefault(m.turn, {})["stt_job"] = t  # the last final job of the turn
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
        i = len(audio_ms) - (len(sent) - frame)  # in:{sid} may have been trimmed at the front
        row = {"turn": n}
        if 0 <= i < len(audio_ms):
            row["frame_in_redis"] = audio_ms[i] - t0
        for key, _ in HOPS[1:-1]:
            if key in hops:
                row[key] = hops[key] - t0
        row["client_first_audio"] = t_client * 1000 - t0
        rows.append(row)
    return rows
