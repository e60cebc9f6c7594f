"""Typed messages that travel inside Redis between gateway, orchestrator and workers.

Stream names are built here too, so no service spells a key by hand. Every key of a session
carries the hash tag `{sid}` (`in:{sid}`, `out:{sid}`, `epoch:{sid}`...): on Redis Cluster they
share one slot, so one script or transaction may touch them together. Job streams are sharded
(`JARVIS_JOB_SHARDS`): a session's jobs of a kind all go to one shard (`job_stream_for`), and
each worker reads every shard.
`ts` fields are wall-clock seconds (time.time()) stamped where the message was made.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from shared import protocol as p
from shared.codec import message

# ---- stream and key names ---------------------------------------------------------

CTL = "ctl"  # session lifecycle; consumer group ORCHESTRATORS
ORCHESTRATORS = "orchestrators"
SESSIONS = "sessions:active"  # hash sid -> owner id (informative; the lease decides)
DEAD_LETTER = "dead"


def in_stream(sid: str) -> str:
    return f"in:{{{sid}}}"


def out_stream(sid: str) -> str:
    return f"out:{{{sid}}}"


def sid_of(key: str) -> str:
    """The session a session key (`in:{sid}`, `owner:{sid}`...) belongs to."""
    return key[key.index("{") + 1 : key.rindex("}")]


def jobs_stream(kind: str, shard: int = 0) -> str:
    """Shard `shard` of a job kind's stream: `jobs:{kind}`, then `jobs:{kind}:1`, `jobs:{kind}:2`...
    (each its own key, so on a cluster the shards spread over the nodes)."""
    return f"jobs:{kind}" if shard == 0 else f"jobs:{kind}:{shard}"


def partial_jobs_stream(kind: str, shard: int = 0) -> str:
    """A worker's low-priority lane (`jobs:stt-partial`): its jobs run only while no job of
    `jobs_stream(kind)` is running or waiting, so a partial transcript never delays a final one."""
    return jobs_stream(f"{kind}-partial", shard)


def job_shard(sid: str, shards: int) -> int:
    """The shard a session's jobs go to (always the same one: its jobs keep their order)."""
    return zlib.crc32(sid.encode()) % shards if shards > 1 else 0


def job_stream_for(kind: str, sid: str, shards: int) -> str:
    return jobs_stream(kind, job_shard(sid, shards))


def job_streams(kind: str, shards: int) -> list[str]:
    """Every shard of a job kind (what its workers read, the reaper watches, the trim trims)."""
    return [jobs_stream(kind, k) for k in range(max(1, shards))]


def reap_key(stream: str, consumer: str) -> str:
    """Taken (SET NX) by the one orchestrator that reaps a dead consumer of `stream`."""
    return f"reap:{stream}:{consumer}"


def epoch_key(sid: str) -> str:
    return f"epoch:{{{sid}}}"


def owner_key(sid: str) -> str:
    return f"owner:{{{sid}}}"


def cursor_key(sid: str) -> str:
    return f"cursor:{{{sid}}}"


def wake_stream(who: str) -> str:
    return f"wake:{who}"


# ---- gateway -> orchestrator ------------------------------------------------------


@message("start")
@dataclass(slots=True)
class SessionStart:
    sid: str
    pipeline: str
    trigger: str | None
    sample_rate: int
    client_vad: bool
    options: dict[str, Any]
    resume: bool
    ts: float


@message("a")
@dataclass(slots=True)
class Audio:
    pcm: bytes  # PCM16LE mono at the session's rate
    ts: float  # when the gateway received the frame


@message("va")
@dataclass(slots=True)
class ScoredAudio:
    """Audio the gateway scored with Silero (`shared.vad`): whole 512-sample windows, one
    speech probability each. `pcm` holds their audio while it matters to a turn (speech, its
    pre-roll, the silence after it) and is empty for a stretch of silence, which still moves
    the session's stream clock by `len(probs)` windows."""

    probs: bytes  # float32 little-endian, one per window
    pcm: bytes  # PCM16LE mono of those windows (512 samples each), or b"" (silence, not sent)
    ts: float  # when the gateway received the frame that completed the last window

    @property
    def windows(self) -> int:
        return len(self.probs) // 4


@message("img")
@dataclass(slots=True)
class Image:
    data: bytes
    mime: str
    ts: float


@message("cmd")
@dataclass(slots=True)
class Command:
    """A validated client message other than `start`: the protocol model's JSON form, as the
    gateway checked it. `message` gives the typed model back."""

    body: dict[str, Any]
    ts: float

    @property
    def message(self) -> p.RelayedMessage:
        return p.relayed_message.validate_python(self.body)


@message("detach")
@dataclass(slots=True)
class Detached:
    """The client's connection closed without `stop`: the session may be resumed."""

    ts: float


# ---- typed hand-offs between stages (nested inside jobs) ----------------------------


@message("plan.speak")
@dataclass(slots=True)
class SpokenReply:
    """The reply is spoken: the LLM worker starts the first sentence's TTS job itself, in the
    same write as the tokens that close that sentence (the orchestrator sends the rest)."""

    voice: str | None = None


@message("plan.llm")
@dataclass(slots=True)
class LlmPlan:
    """Everything a turn's LLM job holds besides the user's words. A final STT job carries it
    (`SttJob.then`), so the transcript starts the reply without another orchestrator hop."""

    kind: str  # the job stream: "llm", or "vlm" for the vision pipeline
    messages: list[dict[str, Any]]  # the history window, OpenAI chat messages
    context: dict[str, Any]  # the session's tool context (key -> value)
    parts: list[dict[str, Any]] = field(default_factory=list)  # extra OpenAI content parts (an image)
    speak: SpokenReply | None = None  # None: a text-only reply


# ---- orchestrator -> workers (jobs:{kind}) -----------------------------------------


@message("job.stt")
@dataclass(slots=True)
class SttJob:
    sid: str
    turn: int
    epoch: int
    pcm: bytes
    sample_rate: int
    partial: bool
    ts: float
    then: LlmPlan | None = None  # the LLM job to start with a non-empty final transcript
    # > 0: a probe (not partial, not final): does this short sound over a reply hold words?
    probe: int = 0
    # > 0: the end-of-turn request of a pause: the turn so far, decoded as a final would be; it
    # decides whether the thought is finished and, if the turn ends there, is its transcript
    pause: int = 0


@message("job.llm")
@dataclass(slots=True)
class LlmJob:
    sid: str
    turn: int
    epoch: int
    messages: list[dict[str, Any]]
    context: dict[str, Any]
    ts: float
    speak: SpokenReply | None = None
    # started on a pause transcript before the turn has ended: the orchestrator holds its
    # tokens, its first sentence's audio goes to the orchestrator (`TtsJob.hold`), and a tool
    # with side effects is not run (the reply stops there, `LlmDone.held_tool`)
    preemptive: bool = False


def llm_job(
    sid: str, turn: int, epoch: int, plan: LlmPlan, text: str, shards: int, preemptive: bool = False
) -> tuple[str, LlmJob]:
    """The LLM job for the user's words `text` and a plan, and its stream (no words: the
    model replies to the conversation as it stands)."""
    content: Any = [{"type": "text", "text": text}, *plan.parts] if plan.parts else text
    messages = [*plan.messages, {"role": "user", "content": content}] if text else list(plan.messages)
    job = LlmJob(sid, turn, epoch, messages, plan.context, time.time(), plan.speak, preemptive)
    return job_stream_for(plan.kind, sid, shards), job


def followup(job: SttJob, text: str, shards: int) -> tuple[str, LlmJob] | None:
    """The LLM job an STT job asked to be started with its transcript (`then`), or None."""
    if not job.then or not text:
        return None
    return llm_job(job.sid, job.turn, job.epoch, job.then, text, shards)


@message("job.tts")
@dataclass(slots=True)
class TtsJob:
    sid: str
    turn: int
    epoch: int
    seq: int  # sentence number within the turn
    text: str
    voice: str | None
    ts: float
    # a preemptive reply's audio: written to the orchestrator (`in:{sid}`), which holds it
    # until the turn has ended, instead of to the client
    hold: bool = False


# ---- workers -> orchestrator (in:{sid}) --------------------------------------------


@message("r.stt")
@dataclass(slots=True)
class SttResult:
    turn: int
    epoch: int
    text: str
    final: bool
    elapsed_ms: float
    ts: float
    probe: int = 0  # the probe job's number, 0 for partial and final transcripts
    pause: int = 0  # the pause job's end-of-turn request, 0 otherwise


@message("r.llm")
@dataclass(slots=True)
class LlmToken:
    turn: int
    epoch: int
    text: str
    ts: float


@message("r.ctx")
@dataclass(slots=True)
class ContextSet:
    turn: int
    epoch: int
    key: str
    value: Any


@message("r.llm.done")
@dataclass(slots=True)
class LlmDone:
    turn: int
    epoch: int
    elapsed_ms: float
    ts: float
    truncated: bool = False  # cut at max_tokens: the text's last sentence may be unfinished
    held_tool: str = ""  # a preemptive reply stopped at this tool (side effects), not run


@message("r.tts")
@dataclass(slots=True)
class TtsProgress:
    """A sentence's audio started (done=False, after its first chunk) or is all in out:{sid}."""

    turn: int
    epoch: int
    seq: int
    samples: int  # written so far
    sample_rate: int
    first_audio_ts: float  # when its first chunk was written
    done: bool
    elapsed_ms: float
    ts: float


@message("r.fail")
@dataclass(slots=True)
class JobFailed:
    kind: str
    turn: int
    epoch: int
    error: str
    ts: float


# ---- to the client (out:{sid}) -----------------------------------------------------


@message("ev")
@dataclass(slots=True)
class ClientEvent:
    json: str  # a protocol server event, already serialised


@message("pcm")
@dataclass(slots=True)
class AudioOut:
    turn: int
    epoch: int
    pcm: bytes


@message("wake")
@dataclass(slots=True)
class Wake:
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ---- reliability: worker liveness, lost jobs, resume secrets -------------------------

JOB_KINDS = ("stt", "llm", "vlm", "tts")


def workers_key(kind: str) -> str:
    """Sorted set: live worker consumers of `jobs:{kind}`, scored by their last heartbeat (ms)."""
    return f"workers:{kind}"


def secret_key(sid: str) -> str:
    """The SHA-256 of the session's resume secret (hex)."""
    return f"secret:{{{sid}}}"


@message("r.lost")
@dataclass(slots=True)
class JobLost:
    """A worker died holding this job (its heartbeat stopped): the orchestrator runs it again.
    Written by whichever orchestrator found the dead worker, from the job itself."""

    kind: str
    turn: int
    epoch: int
    seq: int = 0  # a TTS job's sentence
    partial: bool = False  # an STT partial (nothing to redo)
    probe: int = 0  # an STT probe's number
    ts: float = 0.0

    @classmethod
    def of(cls, kind: str, job: Any) -> JobLost:
        return cls(
            kind,
            job.turn,
            job.epoch,
            getattr(job, "seq", 0),
            bool(getattr(job, "partial", False)),
            getattr(job, "probe", 0),
            time.time(),
        )
