"""The Realtime API's events as this server reads and writes them.

Client events are parsed into the models below (unknown fields are refused, as the API
does); server events are built from them and serialised without unset fields. Their shapes
follow the official SDK's `openai.types.realtime` models, which the tests validate every
event we send against.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- client -> server: session configuration -----------------------------------------


class AudioFormat(_In):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] | None = None
    rate: int | None = None


class TurnDetection(_In):
    type: Literal["server_vad", "semantic_vad"]
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    threshold: float | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None


class Transcription(_In):
    model: str | None = None
    language: str | None = None
    languages: list[str] | None = None
    prompt: str | None = None
    delay: str | None = None
    keywords: list[str] | None = None


class NoiseReduction(_In):
    type: str | None = None


class AudioInput(_In):
    format: AudioFormat | None = None
    noise_reduction: NoiseReduction | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None  # explicitly null: the client commits


class VoiceId(_In):
    id: str


class AudioOutput(_In):
    format: AudioFormat | None = None
    speed: float | None = None
    voice: str | VoiceId | None = None


class AudioConfig(_In):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class SessionConfig(_In):
    type: Literal["realtime", "transcription"] = "realtime"
    audio: AudioConfig | None = None
    include: list[str] | None = None
    instructions: str | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    model: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    parallel_tool_calls: bool | None = None
    prompt: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tracing: str | dict[str, Any] | None = None
    truncation: str | dict[str, Any] | None = None


# ---- client -> server: items -------------------------------------------------------------


class ContentIn(_In):
    type: str | None = None
    text: str | None = None
    audio: str | None = None  # base64 PCM16 at 24 kHz
    transcript: str | None = None
    image_url: str | None = None
    detail: str | None = None


class ItemIn(_In):
    type: str
    id: str | None = None
    object: str | None = None
    role: Literal["user", "assistant", "system"] | None = None
    status: str | None = None
    content: list[ContentIn] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    server_label: str | None = None
    approval_request_id: str | None = None
    approve: bool | None = None
    reason: str | None = None


class ResponseAudioOutput(_In):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None


class ResponseAudio(_In):
    output: ResponseAudioOutput | None = None


class ResponseParams(_In):
    audio: ResponseAudio | None = None
    conversation: str | None = None
    input: list[ItemIn] | None = None
    instructions: str | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    metadata: dict[str, str] | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    parallel_tool_calls: bool | None = None
    prompt: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


# ---- client -> server: events --------------------------------------------------------------


class _ClientEvent(_In):
    event_id: str | None = None


class SessionUpdate(_ClientEvent):
    type: Literal["session.update"]
    session: SessionConfig


class AudioAppend(_ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str


class AudioCommit(_ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(_ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class ItemCreate(_ClientEvent):
    type: Literal["conversation.item.create"]
    item: ItemIn
    previous_item_id: str | None = None


class ItemTruncate(_ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int
    audio_end_ms: int = Field(ge=0)


class ItemDelete(_ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: str


class ItemRetrieve(_ClientEvent):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ResponseCreate(_ClientEvent):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


class OutputAudioClear(_ClientEvent):
    type: Literal["output_audio_buffer.clear"]


ClientEvent = Annotated[
    SessionUpdate
    | AudioAppend
    | AudioCommit
    | AudioClear
    | ItemCreate
    | ItemTruncate
    | ItemDelete
    | ItemRetrieve
    | ResponseCreate
    | ResponseCancel
    | OutputAudioClear,
    Field(discriminator="type"),
]
_client_event: TypeAdapter[Any] = TypeAdapter(ClientEvent)
CLIENT_TYPES = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.truncate",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "response.create",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)


class RealtimeError(Exception):
    """Bad input or an unsupported request: answered with an `error` event, the connection stays."""

    def __init__(
        self,
        code: str,
        message: str,
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.event_id, self.kind = code, message, param, event_id, kind


def parse_client_event(raw: str | bytes) -> Any:
    """A text frame as a typed client event, or RealtimeError with a clear reason."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RealtimeError("invalid_json", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RealtimeError("invalid_event", "an event must be a JSON object with a 'type'")
    kind, event_id = obj.get("type"), obj.get("event_id")
    event_id = event_id if isinstance(event_id, str) else None
    if kind not in CLIENT_TYPES:
        raise RealtimeError("unknown_event_type", f"unknown event type {kind!r}", "type", event_id)
    try:
        return _client_event.validate_python(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(x) for x in first["loc"][1:]) or None
        details = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors()[:5])
        raise RealtimeError("invalid_value", f"invalid {kind}: {details}", param, event_id) from None


# ---- server -> client ------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str = Field(default_factory=lambda: new_id("event"))

    def dump(self) -> str:
        return self.model_dump_json(exclude_none=True)


class FormatOut(BaseModel):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000] = 24000


class TurnDetectionOut(BaseModel):
    type: Literal["server_vad", "semantic_vad"]
    create_response: bool = True
    interrupt_response: bool = True


class TranscriptionOut(BaseModel):
    model: str
    language: str | None = None


class AudioInputOut(BaseModel):
    format: FormatOut = Field(default_factory=FormatOut)
    transcription: TranscriptionOut | None = None
    turn_detection: TurnDetectionOut | None = None


class AudioOutputOut(BaseModel):
    format: FormatOut = Field(default_factory=FormatOut)
    voice: str | None = None


class AudioConfigOut(BaseModel):
    input: AudioInputOut = Field(default_factory=AudioInputOut)
    output: AudioOutputOut = Field(default_factory=AudioOutputOut)


class SessionOut(BaseModel):
    """The session's effective configuration: what this server does, not merely what was asked."""

    type: Literal["realtime"] = "realtime"
    model: str
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]]
    audio: AudioConfigOut = Field(default_factory=AudioConfigOut)
    tool_choice: Literal["auto"] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)


class ConversationOut(BaseModel):
    id: str
    object: Literal["realtime.conversation"] = "realtime.conversation"


class ErrorOut(BaseModel):
    type: str
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None


class PartOut(BaseModel):
    type: Literal["input_text", "input_audio", "output_text", "output_audio", "text", "audio"]
    text: str | None = None
    transcript: str | None = None


class ItemOut(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system"]
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    content: list[PartOut] = Field(default_factory=list)


class StatusError(BaseModel):
    type: str
    code: str | None = None


class StatusDetails(BaseModel):
    type: Literal["completed", "cancelled", "incomplete", "failed"]
    reason: Literal["turn_detected", "client_cancelled", "max_output_tokens", "content_filter"] | None = None
    error: StatusError | None = None


class ResponseAudioOutputOut(BaseModel):
    format: FormatOut = Field(default_factory=FormatOut)
    voice: str | None = None


class ResponseAudioOut(BaseModel):
    output: ResponseAudioOutputOut = Field(default_factory=ResponseAudioOutputOut)


class ResponseOut(BaseModel):
    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: Literal["completed", "cancelled", "failed", "incomplete", "in_progress"] = "in_progress"
    status_details: StatusDetails | None = None
    output: list[ItemOut] = Field(default_factory=list)
    output_modalities: list[Literal["text", "audio"]]
    conversation_id: str | None = None
    audio: ResponseAudioOut | None = None


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class SessionCreated(_Out):
    type: Literal["session.created"] = "session.created"
    session: SessionOut


class SessionUpdated(_Out):
    type: Literal["session.updated"] = "session.updated"
    session: SessionOut


class ConversationCreated(_Out):
    type: Literal["conversation.created"] = "conversation.created"
    conversation: ConversationOut


class ErrorEvent(_Out):
    type: Literal["error"] = "error"
    error: ErrorOut


class SpeechStarted(_Out):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStopped(_Out):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class AudioCommitted(_Out):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class AudioCleared(_Out):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class ItemAdded(_Out):
    type: Literal["conversation.item.added"] = "conversation.item.added"
    item: ItemOut
    previous_item_id: str | None = None


class ItemDone(_Out):
    type: Literal["conversation.item.done"] = "conversation.item.done"
    item: ItemOut
    previous_item_id: str | None = None


class ItemTruncated(_Out):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int = 0
    audio_end_ms: int


class ItemDeleted(_Out):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class TranscriptionDelta(_Out):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


class TranscriptionCompleted(_Out):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: DurationUsage


class TranscriptionFailed(_Out):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int = 0
    error: ErrorOut


class ResponseCreated(_Out):
    type: Literal["response.created"] = "response.created"
    response: ResponseOut


class ResponseDone(_Out):
    type: Literal["response.done"] = "response.done"
    response: ResponseOut


class _OutputItemEvent(_Out):
    response_id: str
    output_index: int = 0
    item: ItemOut


class OutputItemAdded(_OutputItemEvent):
    type: Literal["response.output_item.added"] = "response.output_item.added"


class OutputItemDone(_OutputItemEvent):
    type: Literal["response.output_item.done"] = "response.output_item.done"


class PartIn(BaseModel):
    """A content part as the `response.content_part.*` events carry it."""

    type: Literal["text", "audio"]
    text: str | None = None
    transcript: str | None = None


class _PartEvent(_Out):
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


class ContentPartAdded(_PartEvent):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    part: PartIn


class ContentPartDone(_PartEvent):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    part: PartIn


class AudioDelta(_PartEvent):
    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    delta: str  # base64 PCM16 at 24 kHz


class AudioDone(_PartEvent):
    type: Literal["response.output_audio.done"] = "response.output_audio.done"


class AudioTranscriptDelta(_PartEvent):
    type: Literal["response.output_audio_transcript.delta"] = "response.output_audio_transcript.delta"
    delta: str


class AudioTranscriptDone(_PartEvent):
    type: Literal["response.output_audio_transcript.done"] = "response.output_audio_transcript.done"
    transcript: str


class TextDelta(_PartEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str


class TextDone(_PartEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str


def error_event(exc: RealtimeError) -> ErrorEvent:
    return ErrorEvent(
        error=ErrorOut(
            type=exc.kind, code=exc.code, message=exc.message, param=exc.param, event_id=exc.event_id
        )
    )
