"""The client protocol: every WebSocket message a client sends and every event it receives.

Text frames are JSON objects with a `type`; binary frames are a 1-byte kind tag and a
payload (`AUDIO` = PCM16LE mono at the session's rate, `IMAGE` = a JPEG or PNG). The
same `AUDIO` tag carries reply audio to the client, at the rate `audio_start` announced.
docs/PROTOCOL.md is the prose version of this module.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

AUDIO = 0x01
IMAGE = 0x02

PROTOCOL_VERSION = 1


class State(StrEnum):
    IDLE = "IDLE"
    LOADING = "LOADING"
    LISTENING = "LISTENING"
    THINKING = "THINKING"
    SPEAKING = "SPEAKING"


# the pipelines a `start` / `config` may name (services/orchestrator/pipeline.py defines them and
# checks the two agree), so the gateway refuses an unknown one before it opens anything
PIPELINE_NAMES = frozenset({"sts", "chat", "vision"})


class Trigger(StrEnum):
    VAD = "vad"  # server VAD, or the client's `vad` flags when it announced client_vad
    MANUAL = "manual"  # push to talk: `turn` begin / end
    CONTINUOUS = "continuous"  # every pause ends a turn; no barge-in by speech


# each pipeline's default trigger (services.orchestrator.pipeline checks it names the same): the
# gateway needs it to know which sessions use server VAD
PIPELINE_TRIGGERS: dict[str, Trigger] = {"sts": Trigger.VAD, "chat": Trigger.MANUAL, "vision": Trigger.VAD}


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid_message"
    NO_SESSION = "no_session"
    SESSION_ACTIVE = "session_active"
    BAD_FRAME = "bad_frame"
    BAD_RATE = "unsupported_sample_rate"
    UNAUTHORIZED = "unauthorized"
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_SESSION_ID = "bad_session_id"
    UNKNOWN_PIPELINE = "unknown_pipeline"
    MODEL_ERROR = "model_error"
    WONT_FIT = "wont_fit"
    INTERNAL = "internal"
    RATE_LIMITED = "rate_limited"  # audio faster than real time beyond the burst allowance


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- client -> server -------------------------------------------------------------


class Start(_Msg):
    type: Literal["start"] = "start"
    pipeline: str = "sts"
    session_id: str | None = None  # resume this session (history kept)
    last_event_id: str | None = None  # resume the event stream after this id
    sample_rate: int = 16000
    trigger: Trigger | None = None  # default: the pipeline's
    client_vad: bool = False  # the client sends `vad` flags; server VAD is then off
    options: dict[str, Any] = Field(default_factory=dict)
    resume_secret: str | None = Field(default=None, max_length=256)  # with session_id: the one `ready` gave


class Stop(_Msg):
    type: Literal["stop"] = "stop"


class Config(_Msg):
    type: Literal["config"] = "config"
    pipeline: str | None = None  # switch pipeline; history is kept
    trigger: Trigger | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class Text(_Msg):
    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=8000)
    speak: bool | None = None  # None: the pipeline decides


class Vad(_Msg):
    type: Literal["vad"] = "vad"
    speaking: bool


class Interrupt(_Msg):
    type: Literal["interrupt"] = "interrupt"


class Turn(_Msg):
    type: Literal["turn"] = "turn"
    action: Literal["begin", "end"]


# the conversation as the OpenAI Realtime API edits it (services/gateway/realtime), for any client


class Instructions(_Msg):
    """The session's system prompt, kept with the session; empty: the deployment's own."""

    type: Literal["instructions"] = "instructions"
    text: str = Field(default="", max_length=32000)


class Respond(_Msg):
    """Reply now without new words from the user (to speak first, or to go on); interrupts a
    reply in progress."""

    type: Literal["respond"] = "respond"
    speak: bool | None = None  # None: as the session's replies are (see `Output`)


class Forget(_Msg):
    """Take one side of a past turn out of the history the model sees; answered by `forgotten`."""

    type: Literal["forget"] = "forget"
    turn: int = Field(ge=1)
    role: Literal["user", "assistant"]


class Truncate(_Msg):
    """The client played `audio_end_ms` of turn `turn`'s reply and no more: the reply stops
    there and history keeps the words heard by then; answered by `interrupted`. Works on the
    reply in progress or still playing, and on the latest one after it played."""

    type: Literal["truncate"] = "truncate"
    turn: int = Field(ge=1)
    audio_end_ms: int = Field(ge=0)


class Output(_Msg):
    """Whether replies are spoken; None: as the pipeline does. Text-only replies skip TTS."""

    type: Literal["output"] = "output"
    speak: bool | None = None


_Relayed = Stop | Config | Text | Vad | Interrupt | Turn | Instructions | Respond | Forget | Truncate | Output
ClientMessage = Annotated[Start | _Relayed, Field(discriminator="type")]
client_message = TypeAdapter(ClientMessage)
CLIENT_TYPES = frozenset(
    {
        "start",
        "stop",
        "config",
        "text",
        "vad",
        "interrupt",
        "turn",
        "instructions",
        "respond",
        "forget",
        "truncate",
        "output",
    }
)
# what the gateway relays to the session's owner (a `start` goes to the orchestrators instead)
RelayedMessage = Annotated[_Relayed, Field(discriminator="type")]
relayed_message: TypeAdapter[_Relayed] = TypeAdapter(RelayedMessage)


# ---- server -> client -------------------------------------------------------------


class _Event(BaseModel):
    id: str | None = None  # position in the session's event stream; send it back to resume


class Ready(_Event):
    type: Literal["ready"] = "ready"
    session_id: str
    pipeline: str
    trigger: Trigger
    sample_rate: int
    resumed: bool = False
    turns: int = 0  # turns already in the session's history
    # what resuming this session takes (with `session_id`); only the connection that opened or
    # resumed the session gets it (the gateway adds it; it is never stored, only its hash)
    resume_secret: str | None = None


class StateChanged(_Event):
    type: Literal["state"] = "state"
    state: State
    previous: State | None = None


class VadEvent(_Event):
    type: Literal["vad"] = "vad"
    speaking: bool


class TranscriptEvent(_Event):
    type: Literal["transcript"] = "transcript"
    turn: int
    text: str
    final: bool


class Reply(_Event):
    type: Literal["reply"] = "reply"
    turn: int
    delta: str = ""
    final: bool = False
    text: str | None = None  # the whole reply, on the final event


class AudioStart(_Event):
    type: Literal["audio_start"] = "audio_start"
    turn: int
    sample_rate: int


class AudioEnd(_Event):
    type: Literal["audio_end"] = "audio_end"
    turn: int


class Interrupted(_Event):
    type: Literal["interrupted"] = "interrupted"
    turn: int
    spoken: str = ""  # the part of the reply the user heard, kept in history
    # the user went on talking before hearing the reply: the same turn continues, and its next
    # transcript (same turn number) covers all its words
    continued: bool = False


class Playback(_Event):
    """Pause the reply's playback at once (the user started to speak over it) or resume it
    where it paused (it was a cough or an "mhm"). Audio that arrives while paused is kept."""

    type: Literal["playback"] = "playback"
    turn: int
    action: Literal["pause", "resume"]


class ModelLoad(BaseModel):
    model: str
    state: str
    progress: float = 0.0


class Loading(_Event):
    type: Literal["loading"] = "loading"
    models: list[ModelLoad]
    eta_s: float | None = None


class Metrics(_Event):
    type: Literal["metrics"] = "metrics"
    turn: int
    # milliseconds from the end of the user's speech
    end_of_turn_ms: float  # the end-of-turn decision (the silence the detector waited for)
    transcript_ms: float | None = None  # final transcript ready
    first_token_ms: float | None = None  # first LLM token
    first_audio_ms: float | None = None  # first reply audio byte sent to the client
    total_ms: float  # the turn's end (last audio, or reply done)
    # time each stage spent
    stt_ms: float | None = None
    llm_ms: float | None = None
    tts_ms: float | None = None
    interrupted: bool = False


class Error(_Event):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    fatal: bool = False  # the session (not the connection) ended


class Forgotten(_Event):
    """A `forget` was applied: that side of the turn no longer reaches the model."""

    type: Literal["forgotten"] = "forgotten"
    turn: int
    role: Literal["user", "assistant"]


ServerEvent = Annotated[
    Ready
    | StateChanged
    | VadEvent
    | TranscriptEvent
    | Reply
    | AudioStart
    | AudioEnd
    | Interrupted
    | Playback
    | Loading
    | Metrics
    | Error
    | Forgotten,
    Field(discriminator="type"),
]
server_event = TypeAdapter(ServerEvent)


class ProtocolError(ValueError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_client_text(raw: str | bytes) -> Start | _Relayed:
    """Parse a text frame into a typed message, or raise ProtocolError with a clear reason."""
    import json

    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.INVALID, "a message must be a JSON object with a 'type'")
    kind = obj.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}")
    try:
        return client_message.validate_python(obj)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(map(str, e['loc'][1:])) or e['loc'][0]}: {e['msg']}" for e in exc.errors()
        )
        raise ProtocolError(ErrorCode.INVALID, f"invalid {kind}: {details}") from None


def dump(event: _Event) -> str:
    """JSON text of a server event, without unset optional fields."""
    return event.model_dump_json(exclude_none=True)


MAX_JSON_DEPTH = 32


def parse_client_frame(raw: str | bytes) -> Start | _Relayed:
    """`parse_client_text` hardened for any input: a `type` that is not a string, JSON nested
    deeper than MAX_JSON_DEPTH, or text that is not UTF-8 get a clear ProtocolError (never an
    internal error)."""
    import json

    try:
        obj = json.loads(raw)
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_JSON, "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.INVALID, "a message must be a JSON object with a 'type'")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        shown = kind if isinstance(kind, str | int | float | bool | None) else type(kind).__name__
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {shown!r}")
    if _depth(obj) > MAX_JSON_DEPTH:
        raise ProtocolError(ErrorCode.INVALID, f"{kind}: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return client_message.validate_python(obj)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(map(str, e['loc'][1:])) or e['loc'][0]}: {e['msg']}" for e in exc.errors()
        )
        raise ProtocolError(ErrorCode.INVALID, f"invalid {kind}: {details}") from None


def _depth(obj: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_JSON_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest
