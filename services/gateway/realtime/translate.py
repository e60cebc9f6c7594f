"""One Realtime connection's state machine: Realtime client events in, Jarvis commands out;
Jarvis session events and reply audio in, Realtime server events out.

It does no I/O. Each call appends the server events to send to `events` and the Jarvis
messages to publish to `commands` (protocol models, and `bytes` for audio at the session's
rate); the connection handler drains both. The Jarvis session behind it keeps the
conversation (history, turn taking, barge-in); this module only keeps what the Realtime
API names and Jarvis does not: item and response ids, the input buffer of manual-commit
mode, and what the client has been sent of the current reply.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from services.gateway.realtime import RATE
from services.gateway.realtime import events as rt
from services.gateway.realtime.resample import Resampler
from shared import protocol as p

log = logging.getLogger("jarvis.gateway.realtime")

Modality = Literal["text", "audio"]
# The Realtime API's stock voice names mean nothing to our TTS: they pick the deployment's voice.
STOCK_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
MAX_BUFFER_S = 30.0  # manual-commit audio held for one turn (the orchestrator's longest turn)
MIN_COMMIT_MS = 100  # the API refuses to commit less
_SERVER_CODES = {p.ErrorCode.MODEL_ERROR, p.ErrorCode.WONT_FIT, p.ErrorCode.INTERNAL}


def unsupported(what: str, param: str | None = None, event_id: str | None = None) -> rt.RealtimeError:
    return rt.RealtimeError("unsupported_feature", f"{what} is not supported by this server", param, event_id)


@dataclass
class Settings:
    """The session as the Realtime client configured it (what `session.updated` reports)."""

    model: str
    modalities: list[Modality] = field(default_factory=lambda: ["audio"])
    turn_detection: Literal["server_vad", "semantic_vad"] | None = "server_vad"
    interrupt_response: bool = True
    transcription: bool = True
    voice: str | None = None
    instructions: str | None = None

    @property
    def trigger(self) -> p.Trigger:
        if self.turn_detection is None:
            return p.Trigger.MANUAL
        return p.Trigger.VAD if self.interrupt_response else p.Trigger.CONTINUOUS

    @property
    def jarvis_voice(self) -> str | None:
        return None if self.voice is None or self.voice in STOCK_VOICES else self.voice

    def out(self) -> rt.SessionOut:
        td = None
        if self.turn_detection is not None:
            td = rt.TurnDetectionOut(type=self.turn_detection, interrupt_response=self.interrupt_response)
        return rt.SessionOut(
            model=self.model,
            instructions=self.instructions,
            output_modalities=list(self.modalities),
            audio=rt.AudioConfigOut(
                input=rt.AudioInputOut(
                    transcription=rt.TranscriptionOut(model="jarvis-stt") if self.transcription else None,
                    turn_detection=td,
                ),
                output=rt.AudioOutputOut(voice=self.voice),
            ),
        )


@dataclass
class UserItem:
    id: str
    kind: Literal["text", "audio"]
    text: str = ""  # typed text, or the transcript once known
    pcm: bytes = b""  # manual mode: committed audio at the session's rate, until a response takes it
    seconds: float = 0.0


@dataclass
class Response:
    id: str
    item_id: str  # the assistant message it produces
    modalities: list[Modality]
    user: list[UserItem]
    turn: int | None = None  # the Jarvis turn answering it (known from its first event)
    opened: bool = False  # output item and content part announced
    text: str = ""
    audio_samples: int = 0  # sent to the client, at 24 kHz
    first_audio: float | None = None  # wall clock of the first audio delta
    resampler: Resampler | None = None
    failed: str | None = None
    cancel_reason: Literal["turn_detected", "client_cancelled"] = "turn_detected"
    truncate_ms: int | None = None  # the client's own playback position, when it asked
    done: bool = False

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities

    @property
    def audio_ms(self) -> int:
        return self.audio_samples * 1000 // RATE

    def heard_ms(self, now: float) -> int:
        """What the client has played by `now`, assuming it plays as it receives."""
        if self.first_audio is None:
            return 0
        return min(self.audio_ms, int((now - self.first_audio) * 1000))

    def playing(self, now: float) -> bool:
        return self.first_audio is not None and now < self.first_audio + self.audio_ms / 1000


class Translator:
    def __init__(
        self,
        model: str,
        session_rate: int,
        resume_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = Settings(model=model)
        self.session_rate = session_rate
        self.resume_id = resume_id
        self.clock = clock
        self.sid: str | None = None  # the Jarvis session, once the first session.update opened it
        self.events: list[rt._Out] = []
        self.commands: list[p._Msg | bytes] = []
        self._pending_ready: deque[rt.SessionOut] = deque()  # session.updated answers awaiting `ready`
        self._in = Resampler(RATE, session_rate)
        self._in_samples = 0  # client audio received, at 24 kHz (the clock of audio_*_ms)
        self._buffer = bytearray()  # manual mode: uncommitted audio at the session's rate
        self._committed: list[UserItem] = []  # user items no response has taken yet
        self._order: list[str] = []  # item ids of this connection's conversation, in order
        self._speech: UserItem | None = None  # server VAD: the item being spoken
        self._speech_start_ms = 0
        self._stopped: deque[UserItem] = deque()  # speech ended, awaiting its turn (THINKING)
        self._just_stopped = False  # the previous Jarvis event was the end of speech
        self._partial_prev: list[str] = []
        self._partial_sent = ""
        self._requested: deque[Response] = deque()  # response.create sent, its turn not begun
        self.response: Response | None = None  # the response streaming now
        self._finished: Response | None = None  # the last response done, while its audio may play
        self._known: set[str] = set()  # item ids of this connection's conversation
        self._turn_of: dict[str, tuple[int, Literal["user", "assistant"]]] = {}  # answered items
        self._forgetting: dict[tuple[int, str], list[str]] = {}  # `forget` sent, awaiting `forgotten`
        self._recent: deque[Response] = deque(maxlen=4)  # responses done, for a late `interrupted`
        self._turn_floor = 0  # the latest Jarvis turn a response was tied to: later ones are new

    # ---- helpers -----------------------------------------------------------------------

    def emit(self, *events: rt._Out) -> None:
        self.events.extend(events)

    def take(self) -> tuple[list[rt._Out], list[p._Msg | bytes]]:
        events, commands = self.events, self.commands
        self.events, self.commands = [], []
        return events, commands

    def _add_item(self, item_id: str) -> str | None:
        previous = self._last_item
        self._order.append(item_id)
        self._known.add(item_id)
        return previous

    @property
    def _last_item(self) -> str | None:
        return self._order[-1] if self._order else None

    def _drop_item(self, item_id: str) -> None:
        """The item leaves the conversation; the client is told."""
        self._known.discard(item_id)
        self._turn_of.pop(item_id, None)
        if item_id in self._order:
            self._order.remove(item_id)
        self.emit(rt.ItemDeleted(item_id=item_id))

    @property
    def active(self) -> Response | None:
        """The response the client would cancel: streaming, requested, or still playing."""
        if self.response is not None:
            return self.response
        if self._requested:
            return self._requested[0]
        if self._finished is not None and self._finished.playing(self.clock()):
            return self._finished
        return None

    def created(self) -> rt.SessionCreated:
        return rt.SessionCreated(session=self.settings.out())

    # ---- client events ---------------------------------------------------------------------

    def on_client(self, ev: Any) -> None:
        """A client event; a RealtimeError leaves nothing half done (no event, no command)."""
        marks = len(self.events), len(self.commands)
        try:
            self._on_client(ev)
        except rt.RealtimeError:
            del self.events[marks[0] :], self.commands[marks[1] :]
            raise

    def _on_client(self, ev: Any) -> None:
        if isinstance(ev, rt.SessionUpdate):
            self._session_update(ev)
            return
        if self.sid is None:
            raise rt.RealtimeError(
                "session_not_configured",
                f"send session.update before {ev.type}: it opens the session",
                "type",
                ev.event_id,
            )
        if isinstance(ev, rt.AudioAppend):
            self._append(ev)
        elif isinstance(ev, rt.AudioCommit):
            self._commit(ev)
        elif isinstance(ev, rt.AudioClear):
            self._clear(ev)
        elif isinstance(ev, rt.ItemCreate):
            self._item_create(ev)
        elif isinstance(ev, rt.ResponseCreate):
            self._response_create(ev)
        elif isinstance(ev, rt.ResponseCancel):
            self._cancel(ev)
        elif isinstance(ev, rt.ItemTruncate):
            self._truncate(ev)
        elif isinstance(ev, rt.ItemDelete):
            self._delete(ev)
        elif isinstance(ev, rt.OutputAudioClear):
            self._output_clear(ev)
        elif isinstance(ev, rt.ItemRetrieve):
            raise unsupported("conversation.item.retrieve (items' audio is not kept)", "type", ev.event_id)

    def _session_update(self, ev: rt.SessionUpdate) -> None:
        s, eid = ev.session, ev.event_id
        new = replace(self.settings, modalities=list(self.settings.modalities))
        if s.type != "realtime":
            raise unsupported("a transcription-only session", "session.type", eid)
        if s.tools:
            raise unsupported(
                "client-side tools (Jarvis runs its own tools on the server)", "session.tools", eid
            )
        if s.tool_choice not in (None, "auto", "none"):
            raise unsupported("tool_choice other than auto", "session.tool_choice", eid)
        if s.prompt is not None:
            raise unsupported("stored prompts", "session.prompt", eid)
        if "instructions" in s.model_fields_set:
            new.instructions = s.instructions or None
        if isinstance(s.max_output_tokens, int):
            raise unsupported("max_output_tokens", "session.max_output_tokens", eid)
        if s.model:
            new.model = s.model
        if s.output_modalities is not None:
            if len(s.output_modalities) != 1:
                raise rt.RealtimeError(
                    "invalid_value",
                    "output_modalities is ['audio'] or ['text']",
                    "session.output_modalities",
                    eid,
                )
            new.modalities = list(s.output_modalities)
        audio = s.audio
        if audio is not None and audio.input is not None:
            inp = audio.input
            _check_format(inp.format, "session.audio.input.format", eid)
            if "turn_detection" in inp.model_fields_set:
                td = inp.turn_detection
                if td is None:
                    new.turn_detection = None
                else:
                    if td.create_response is False:
                        raise unsupported(
                            "turn detection without create_response (every turn is answered)",
                            "session.audio.input.turn_detection.create_response",
                            eid,
                        )
                    new.turn_detection = td.type
                    new.interrupt_response = td.interrupt_response is not False
            if "transcription" in inp.model_fields_set:
                new.transcription = inp.transcription is not None
        if audio is not None and audio.output is not None:
            _check_format(audio.output.format, "session.audio.output.format", eid)
            voice = audio.output.voice
            if voice is not None:
                new.voice = voice if isinstance(voice, str) else voice.id
        old, self.settings = self.settings, new
        snapshot = new.out()
        first = self.sid is None
        if first:
            self.commands.append(
                p.Start(
                    pipeline="sts",
                    session_id=self.resume_id,
                    sample_rate=self.session_rate,
                    trigger=new.trigger,
                    options=_options(new),
                )
            )
        elif new.trigger != old.trigger or new.jarvis_voice != old.jarvis_voice:
            if old.trigger == p.Trigger.MANUAL and self._buffer:
                self._buffer.clear()  # uncommitted push-to-talk audio has no turn to go to now
            self.commands.append(p.Config(trigger=new.trigger, options=_options(new)))
        answered_by_ready = bool(self.commands)
        if "instructions" in s.model_fields_set and (not first or new.instructions):
            # a resumed session keeps the instructions it had unless the client names new ones
            self.commands.append(p.Instructions(text=new.instructions or ""))
        if new.modalities != old.modalities or (first and new.modalities == ["text"]):
            self.commands.append(_output(new.modalities))
        if answered_by_ready:
            self._pending_ready.append(snapshot)
        else:
            self.emit(rt.SessionUpdated(session=snapshot))

    def open_failed(self) -> None:
        """The first session.update could not open the session: the next one tries again."""
        self._pending_ready.clear()

    def opened(self, sid: str) -> None:
        """The Jarvis session behind this connection is open (the first session.update)."""
        self.sid = sid
        self.emit(rt.ConversationCreated(conversation=rt.ConversationOut(id=sid)))

    def _decode(self, audio: str, param: str, eid: str | None) -> bytes:
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise rt.RealtimeError(
                "invalid_value", "audio must be base64 PCM16 (24 kHz mono)", param, eid
            ) from None
        if len(pcm) % 2:
            raise rt.RealtimeError(
                "invalid_value", "audio must be whole PCM16 samples (an even byte count)", param, eid
            )
        return pcm

    def _append(self, ev: rt.AudioAppend) -> None:
        pcm = self._decode(ev.audio, "audio", ev.event_id)
        if not pcm:
            return
        self._in_samples += len(pcm) // 2
        if self.settings.turn_detection is None:
            if (
                len(self._buffer) + len(pcm) * self.session_rate // RATE
                > MAX_BUFFER_S * self.session_rate * 2
            ):
                raise rt.RealtimeError(
                    "input_audio_buffer_full",
                    f"the input buffer holds at most {MAX_BUFFER_S:.0f} s: commit or clear it",
                    "audio",
                    ev.event_id,
                )
            self._buffer += self._in.process(pcm)
        else:
            out = self._in.process(pcm)
            if out:
                self.commands.append(out)

    @property
    def input_ms(self) -> int:
        return self._in_samples * 1000 // RATE

    def _commit(self, ev: rt.AudioCommit) -> None:
        if self.settings.turn_detection is not None:
            raise unsupported(
                "input_audio_buffer.commit with server VAD on (the server ends turns)", "type", ev.event_id
            )
        ms = len(self._buffer) * 1000 // (2 * self.session_rate)
        if ms < MIN_COMMIT_MS:
            raise rt.RealtimeError(
                "input_audio_buffer_commit_empty",
                f"buffer too small: {MIN_COMMIT_MS} ms of audio are needed, the buffer holds {ms} ms",
                None,
                ev.event_id,
            )
        item = UserItem(rt.new_id("item"), "audio", pcm=bytes(self._buffer), seconds=ms / 1000)
        self._buffer.clear()
        self._committed.append(item)
        previous = self._add_item(item.id)
        self.emit(
            rt.AudioCommitted(item_id=item.id, previous_item_id=previous),
            rt.ItemAdded(item=_user_out(item, "in_progress"), previous_item_id=previous),
        )

    def _clear(self, ev: rt.AudioClear) -> None:
        if self.settings.turn_detection is not None and self._speech is not None:
            raise unsupported("clearing speech the server VAD is already hearing", "type", ev.event_id)
        self._buffer.clear()
        self.emit(rt.AudioCleared())

    def _item_create(self, ev: rt.ItemCreate) -> None:
        item, eid = ev.item, ev.event_id
        if item.type != "message":
            raise unsupported(f"items of type {item.type!r} (client-side tools)", "item.type", eid)
        if item.role != "user":
            raise unsupported(f"{item.role or 'role-less'} items (only user messages)", "item.role", eid)
        if ev.previous_item_id is not None and ev.previous_item_id != self._last_item:
            raise unsupported("inserting an item before the end of the conversation", "previous_item_id", eid)
        if item.id is not None and item.id in self._known:
            raise rt.RealtimeError("item_already_exists", f"item {item.id!r} already exists", "item.id", eid)
        parts = item.content or []
        kinds = {c.type for c in parts}
        if not parts or not kinds <= {"input_text", "input_audio"} or len(kinds) > 1:
            raise rt.RealtimeError(
                "invalid_value",
                "a user item is input_text parts or input_audio parts (images are not supported)",
                "item.content",
                eid,
            )
        item_id = item.id or rt.new_id("item")
        if kinds == {"input_text"}:
            text = "\n".join(c.text or "" for c in parts).strip()
            if not text:
                raise rt.RealtimeError("invalid_value", "the text is empty", "item.content", eid)
            user = UserItem(item_id, "text", text=text)
        else:
            if self.settings.turn_detection is not None:
                raise unsupported(
                    "input_audio items while server VAD is on (set turn_detection to null)",
                    "item.content",
                    eid,
                )
            pcm = b"".join(self._decode(c.audio or "", "item.content.audio", eid) for c in parts)
            local = Resampler(RATE, self.session_rate)
            pcm16 = local.process(pcm) + local.flush()
            if len(pcm16) > MAX_BUFFER_S * self.session_rate * 2:
                raise rt.RealtimeError(
                    "invalid_value", f"an audio item holds at most {MAX_BUFFER_S:.0f} s", "item.content", eid
                )
            user = UserItem(item_id, "audio", pcm=pcm16, seconds=len(pcm) / (2 * RATE))
        self._committed.append(user)
        previous = self._add_item(item_id)
        status: Literal["completed", "in_progress"] = "completed" if user.kind == "text" else "in_progress"
        out = _user_out(user, status)
        self.emit(rt.ItemAdded(item=out, previous_item_id=previous))
        if user.kind == "text":
            self.emit(rt.ItemDone(item=out, previous_item_id=previous))

    def _response_create(self, ev: rt.ResponseCreate) -> None:
        eid = ev.event_id
        if self.response is not None or self._requested:
            raise rt.RealtimeError(
                "conversation_already_has_active_response",
                "a response is in progress: cancel it or wait for response.done",
                None,
                eid,
            )
        modalities = list(self.settings.modalities)
        r = ev.response
        if r is not None:
            if r.instructions:
                raise unsupported(
                    "per-response instructions (set them with session.update)", "response.instructions", eid
                )
            if r.conversation == "none" or r.input is not None:
                raise unsupported(
                    "out-of-band responses (conversation 'none' or input items)", "response.input", eid
                )
            if r.tools:
                raise unsupported("client-side tools", "response.tools", eid)
            if r.prompt is not None:
                raise unsupported("stored prompts", "response.prompt", eid)
            if isinstance(r.max_output_tokens, int):
                raise unsupported("max_output_tokens", "response.max_output_tokens", eid)
            voice = r.audio.output.voice if r.audio and r.audio.output else None
            voice_name = voice if isinstance(voice, str) or voice is None else voice.id
            if voice_name is not None and voice_name != self.settings.voice:
                raise unsupported(
                    "a per-response voice (set it with session.update)", "response.audio.output.voice", eid
                )
            if r.output_modalities is not None:
                if len(r.output_modalities) != 1:
                    raise rt.RealtimeError(
                        "invalid_value",
                        "output_modalities is ['audio'] or ['text']",
                        "response.output_modalities",
                        eid,
                    )
                modalities = list(r.output_modalities)
        items, self._committed = self._committed, []
        kinds = {i.kind for i in items}
        if len(kinds) > 1:
            self._committed = items
            raise unsupported("one response to typed and spoken items together", None, eid)
        resp = Response(rt.new_id("resp"), rt.new_id("item"), modalities, items)
        self._requested.append(resp)
        if not items:  # the model answers the conversation as it stands (e.g. it speaks first)
            self.commands.append(p.Respond(speak=resp.audio))
        elif kinds == {"text"}:
            self.commands.append(p.Text(text="\n".join(i.text for i in items), speak=resp.audio))
        else:
            own = modalities != self.settings.modalities
            if own:  # this response only: the turn's reply mode is fixed when it begins
                self.commands.append(_output(modalities))
            self.commands.append(p.Turn(action="begin"))
            step = self.session_rate // 50 * 2 * 25  # half a second per frame
            for item in items:
                for i in range(0, len(item.pcm), step):
                    self.commands.append(item.pcm[i : i + step])
            self.commands.append(p.Turn(action="end"))
            if own:
                self.commands.append(_output(self.settings.modalities))
        self.emit(rt.ResponseCreated(response=self._response_out(resp, "in_progress")))

    def _cancel(self, ev: rt.ResponseCancel) -> None:
        target = self.active
        if target is None or (ev.response_id is not None and ev.response_id != target.id):
            raise rt.RealtimeError(
                "response_cancel_not_active",
                "there is no active response to cancel",
                "response_id",
                ev.event_id,
            )
        self._interrupt(target)

    def _interrupt(self, target: Response, truncate_ms: int | None = None) -> None:
        target.cancel_reason = "client_cancelled"
        target.truncate_ms = truncate_ms
        self.commands.append(p.Interrupt())

    def _truncate(self, ev: rt.ItemTruncate) -> None:
        eid = ev.event_id
        if ev.item_id not in self._known:
            raise rt.RealtimeError(
                "item_not_found", f"no item {ev.item_id!r} in this conversation", "item_id", eid
            )
        if ev.content_index != 0:
            raise rt.RealtimeError(
                "invalid_value", "assistant items have one content part (index 0)", "content_index", eid
            )
        target = self.active
        if target is None or target.item_id != ev.item_id:
            target = next((r for r in self._recent if r.item_id == ev.item_id), None)
        if target is None or not target.audio:
            raise unsupported("truncating an item other than a recent spoken reply", "item_id", eid)
        if ev.audio_end_ms > target.audio_ms:
            raise rt.RealtimeError(
                "invalid_value",
                f"audio_end_ms {ev.audio_end_ms} is past the {target.audio_ms} ms of audio sent",
                "audio_end_ms",
                eid,
            )
        if not target.done:
            target.cancel_reason = "client_cancelled"
        target.truncate_ms = ev.audio_end_ms
        # the session cuts the reply there (the reply in progress stops) and answers `interrupted`
        self.commands.append(
            p.Truncate(turn=target.turn, audio_end_ms=ev.audio_end_ms) if target.turn else p.Interrupt()
        )

    def _delete(self, ev: rt.ItemDelete) -> None:
        eid = ev.event_id
        for item in self._committed:
            if item.id == ev.item_id:  # not yet answered: simply never sent
                self._committed.remove(item)
                self._drop_item(item.id)
                return
        where = self._turn_of.get(ev.item_id)
        if where is None:
            if ev.item_id in self._known:
                raise rt.RealtimeError(
                    "item_in_progress",
                    f"item {ev.item_id!r} is being answered; delete it after response.done",
                    "item_id",
                    eid,
                )
            raise rt.RealtimeError(
                "item_not_found", f"no item {ev.item_id!r} in this conversation", "item_id", eid
            )
        self._forgetting.setdefault(where, []).append(ev.item_id)
        self.commands.append(p.Forget(turn=where[0], role=where[1]))

    def _output_clear(self, ev: rt.OutputAudioClear) -> None:
        target = self.active
        if target is None:
            raise rt.RealtimeError(
                "response_cancel_not_active", "no response audio is playing", None, ev.event_id
            )
        self._interrupt(target, target.heard_ms(self.clock()))
        if target.turn is not None and target.audio:  # cut history where playback stopped
            self.commands[-1] = p.Truncate(turn=target.turn, audio_end_ms=target.truncate_ms or 0)

    # ---- Jarvis events -----------------------------------------------------------------------

    def on_event(self, ev: Any) -> None:
        just_stopped, self._just_stopped = self._just_stopped, False
        if isinstance(ev, p.StateChanged):
            if ev.state == p.State.THINKING and ev.previous is not None:
                self._thinking(from_speech=just_stopped)
        elif isinstance(ev, p.VadEvent):
            self._vad(ev.speaking)
        elif isinstance(ev, p.TranscriptEvent):
            self._transcript(ev)
        elif isinstance(ev, p.Reply):
            self._reply(ev)
        elif isinstance(ev, p.AudioStart):
            resp = self._bound(ev.turn)
            if resp is not None and resp.audio:
                self._open(resp)
                resp.resampler = Resampler(ev.sample_rate, RATE)
        elif isinstance(ev, p.AudioEnd):
            resp = self.response
            if resp is not None and resp.resampler is not None:
                self._send_audio(resp, resp.resampler.flush())
        elif isinstance(ev, p.Metrics):
            resp = self._bound(ev.turn)
            if resp is not None and resp.turn == ev.turn:
                self._finish(resp, "completed")
        elif isinstance(ev, p.Forgotten):
            for item_id in self._forgetting.pop((ev.turn, ev.role), []):
                self._drop_item(item_id)
        elif isinstance(ev, p.Interrupted):
            self._interrupted(ev)
        elif isinstance(ev, p.Ready):
            if self._pending_ready:
                self.emit(rt.SessionUpdated(session=self._pending_ready.popleft()))
        elif isinstance(ev, p.Error):
            self._error(ev)
        # LOADING / loading progress: nothing a Realtime client knows; the first reply just comes later

    def _vad(self, speaking: bool) -> None:
        if self.settings.turn_detection is None:
            return  # push to talk: the commit made the item
        if speaking:
            self._speech = UserItem(rt.new_id("item"), "audio")
            self._speech_start_ms = self.input_ms
            self._partial_prev, self._partial_sent = [], ""
            self.emit(rt.SpeechStarted(audio_start_ms=self.input_ms, item_id=self._speech.id))
        elif self._speech is not None:
            item, self._speech = self._speech, None
            item.seconds = max(0.0, (self.input_ms - self._speech_start_ms) / 1000)
            self._stopped.append(item)
            self._just_stopped = True
            self.emit(rt.SpeechStopped(audio_end_ms=self.input_ms, item_id=item.id))

    def _thinking(self, from_speech: bool) -> None:
        """A Jarvis turn began: the user's speech was a turn, or a requested response started."""
        continuous = self.settings.trigger == p.Trigger.CONTINUOUS
        item: UserItem | None = None
        if self._stopped and (from_speech or not self._requested):
            # right after the end of speech, or later: words heard over a reply (once STT found
            # them), a turn queued in continuous mode, speech that ended while a reply was cut
            item = self._stopped.popleft() if continuous else self._stopped.pop()
            if not continuous:
                self._stopped.clear()  # speech that ended without a turn (a cough during a reply) is gone
        if item is not None:
            previous = self._add_item(item.id)
            self.emit(
                rt.AudioCommitted(item_id=item.id, previous_item_id=previous),
                rt.ItemAdded(item=_user_out(item, "in_progress"), previous_item_id=previous),
            )
            resp = Response(rt.new_id("resp"), rt.new_id("item"), list(self.settings.modalities), [item])
            self._start(resp)
            self.emit(rt.ResponseCreated(response=self._response_out(resp, "in_progress")))
        elif self._requested:
            self._start(self._requested.popleft())

    def _start(self, resp: Response) -> None:
        if self.response is not None:  # superseded without an `interrupted` (should not happen)
            self._finish(self.response, "cancelled")
        self.response = resp
        self._finished = None

    def _transcript(self, ev: p.TranscriptEvent) -> None:
        if not ev.final:
            self._partial(ev.text)
            return
        resp = self.response
        if resp is None or resp.turn is not None:
            return
        self._bind(resp, ev.turn)
        text = ev.text.strip()
        for n, item in enumerate(resp.user):
            if item.kind != "audio":
                continue
            item.text = text if n == 0 else ""
            if self.settings.transcription:
                self.emit(
                    rt.TranscriptionCompleted(
                        item_id=item.id,
                        transcript=item.text,
                        usage=rt.DurationUsage(seconds=round(item.seconds, 3)),
                    )
                )
            self.emit(rt.ItemDone(item=_user_out(item, "completed")))
        if not text:  # nothing intelligible: nothing to answer
            self._finish(resp, "completed")

    def _partial(self, text: str) -> None:
        """Partial transcripts are whole guesses that may change; the Realtime API's deltas only
        add. Send the words two guesses in a row agree on, when they extend what was sent."""
        if self._speech is None or not self.settings.transcription:
            return
        words = text.split()
        agreed: list[str] = []
        for a, b in zip(self._partial_prev, words, strict=False):
            if a != b:
                break
            agreed.append(a)
        self._partial_prev = words
        stable = " ".join(agreed)
        if len(stable) > len(self._partial_sent) and stable.startswith(self._partial_sent):
            delta = stable[len(self._partial_sent) :]
            self._partial_sent = stable
            self.emit(rt.TranscriptionDelta(item_id=self._speech.id, delta=delta))

    def _open(self, resp: Response) -> None:
        if resp.opened:
            return
        resp.opened = True
        previous = self._add_item(resp.item_id)
        item = rt.ItemOut(id=resp.item_id, role="assistant", status="in_progress")
        self.emit(
            rt.OutputItemAdded(response_id=resp.id, item=item),
            rt.ItemAdded(item=item, previous_item_id=previous),
            rt.ContentPartAdded(response_id=resp.id, item_id=resp.item_id, part=_part(resp, "")),
        )

    def _bound(self, turn: int) -> Response | None:
        """The streaming response, tied to Jarvis turn `turn` by its first event when it had no
        user item to learn it from (a `respond`)."""
        resp = self.response
        if resp is not None and resp.turn is None and not resp.user and turn > self._turn_floor:
            self._bind(resp, turn)
        return resp

    def _bind(self, resp: Response, turn: int) -> None:
        resp.turn = turn
        self._turn_floor = max(self._turn_floor, turn)
        for item in resp.user:
            self._turn_of[item.id] = (turn, "user")
        self._turn_of[resp.item_id] = (turn, "assistant")

    def _reply(self, ev: p.Reply) -> None:
        resp = self._bound(ev.turn)
        if resp is None or ev.final or not ev.delta:
            return
        self._open(resp)
        resp.text += ev.delta
        kind = rt.AudioTranscriptDelta if resp.audio else rt.TextDelta
        self.emit(kind(response_id=resp.id, item_id=resp.item_id, delta=ev.delta))

    def on_audio(self, pcm: bytes) -> None:
        resp = self.response
        if resp is None or not resp.audio:
            return  # a text-only response: the client gets no audio
        self._open(resp)
        if resp.resampler is None:
            resp.resampler = Resampler(self.session_rate, RATE)
        self._send_audio(resp, resp.resampler.process(pcm))

    def _send_audio(self, resp: Response, pcm24: bytes) -> None:
        if not pcm24:
            return
        if resp.first_audio is None:
            resp.first_audio = self.clock()
        resp.audio_samples += len(pcm24) // 2
        self.emit(
            rt.AudioDelta(
                response_id=resp.id, item_id=resp.item_id, delta=base64.b64encode(pcm24).decode("ascii")
            )
        )

    def _interrupted(self, ev: p.Interrupted) -> None:
        now = self.clock()
        resp = self._bound(ev.turn)
        if resp is not None and (resp.turn == ev.turn or resp.turn is None and ev.turn > self._turn_floor):
            if ev.continued:  # the user went on talking before hearing it
                self._finish(resp, "cancelled")
                self._continued(resp)
                return
            heard = resp.truncate_ms if resp.truncate_ms is not None else resp.heard_ms(now)
            if resp.audio:  # what was heard; a text reply keeps what was sent
                resp.text = ev.spoken
            self._finish(resp, "cancelled")
            if resp.opened and resp.audio:
                resp.truncate_ms = heard
                self.emit(rt.ItemTruncated(item_id=resp.item_id, audio_end_ms=heard))
            return
        done = next((r for r in self._recent if r.turn == ev.turn), None)
        if done is not None and ev.continued:
            self._continued(done)
        elif done is not None and done.audio and done.opened:
            heard = done.truncate_ms if done.truncate_ms is not None else done.heard_ms(now)
            done.truncate_ms, done.text = heard, ev.spoken
            self.emit(rt.ItemTruncated(item_id=done.item_id, audio_end_ms=heard))

    def _continued(self, resp: Response) -> None:
        """The session answers the same turn again, all its words together: the reply and the
        user's first words leave the conversation; the next speech item carries them all."""
        for item_id in [i.id for i in resp.user] + ([resp.item_id] if resp.opened else []):
            self._drop_item(item_id)
        self._turn_floor = min(self._turn_floor, (resp.turn or 1) - 1)  # that turn number comes again

    def _error(self, ev: p.Error) -> None:
        kind = "server_error" if ev.code in _SERVER_CODES else "invalid_request_error"
        self.emit(rt.ErrorEvent(error=rt.ErrorOut(type=kind, code=ev.code.value, message=ev.message)))
        resp = self.response
        if resp is not None and ev.code == p.ErrorCode.MODEL_ERROR:
            resp.failed = ev.message

    def _finish(self, resp: Response, status: Literal["completed", "cancelled"]) -> None:
        """Close the response: the content part, the item and the response itself."""
        if resp.done:
            return
        resp.done = True
        if self.response is resp:
            self.response = None
        if resp in self._requested:
            self._requested.remove(resp)
        item_status: Literal["completed", "incomplete"] = (
            "completed" if status == "completed" else "incomplete"
        )
        if resp.opened:
            rid, iid = resp.id, resp.item_id
            if resp.audio:
                self.emit(
                    rt.AudioDone(response_id=rid, item_id=iid),
                    rt.AudioTranscriptDone(response_id=rid, item_id=iid, transcript=resp.text),
                )
            else:
                self.emit(rt.TextDone(response_id=rid, item_id=iid, text=resp.text))
            item = self._item_out(resp, item_status)
            self.emit(
                rt.ContentPartDone(response_id=rid, item_id=iid, part=_part(resp, resp.text)),
                rt.OutputItemDone(response_id=resp.id, item=item),
                rt.ItemDone(item=item),
            )
        final = "failed" if resp.failed and status == "completed" and not resp.text else status
        self.emit(rt.ResponseDone(response=self._response_out(resp, final)))
        self._finished = resp
        self._recent.append(resp)

    def _item_out(
        self, resp: Response, status: Literal["completed", "incomplete", "in_progress"]
    ) -> rt.ItemOut:
        part = (
            rt.PartOut(type="output_audio", transcript=resp.text)
            if resp.audio
            else rt.PartOut(type="output_text", text=resp.text)
        )
        return rt.ItemOut(id=resp.item_id, role="assistant", status=status, content=[part])

    def _response_out(
        self, resp: Response, status: Literal["completed", "cancelled", "failed", "in_progress"]
    ) -> rt.ResponseOut:
        details = None
        if status == "cancelled":
            details = rt.StatusDetails(type="cancelled", reason=resp.cancel_reason)
        elif status == "failed":
            details = rt.StatusDetails(
                type="failed", error=rt.StatusError(type="server_error", code="model_error")
            )
        output = (
            [self._item_out(resp, "completed" if status == "completed" else "incomplete")]
            if (resp.opened and status != "in_progress")
            else []
        )
        audio = (
            rt.ResponseAudioOut(output=rt.ResponseAudioOutputOut(voice=self.settings.voice))
            if resp.audio
            else None
        )
        return rt.ResponseOut(
            id=resp.id,
            status=status,
            status_details=details,
            output=output,
            output_modalities=resp.modalities,
            conversation_id=self.sid,
            audio=audio,
        )


def _check_format(fmt: rt.AudioFormat | None, param: str, eid: str | None) -> None:
    if fmt is None:
        return
    if fmt.type not in (None, "audio/pcm") or fmt.rate not in (None, RATE):
        raise unsupported(
            f"audio format {fmt.type or 'audio/pcm'} at {fmt.rate or RATE} Hz (audio/pcm at 24000 is)",
            param,
            eid,
        )


def _output(modalities: list[Modality]) -> p.Output:
    return p.Output(speak=False if modalities == ["text"] else None)


def _options(s: Settings) -> dict[str, Any]:
    return {"voice": s.jarvis_voice}  # None: the deployment's voice


def _user_out(item: UserItem, status: Literal["completed", "incomplete", "in_progress"]) -> rt.ItemOut:
    if item.kind == "text":
        part = rt.PartOut(type="input_text", text=item.text)
    else:
        part = rt.PartOut(type="input_audio", transcript=item.text or None)
    return rt.ItemOut(id=item.id, role="user", status=status, content=[part])


def _part(resp: Response, text: str) -> rt.PartIn:
    return rt.PartIn(type="audio", transcript=text) if resp.audio else rt.PartIn(type="text", text=text)
