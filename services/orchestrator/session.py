"""One live session inside the orchestrator: the state machine, turn taking, dispatch of
jobs and the handling of their results.

The runner never talks to Redis itself: it queues entries on its host's outbox (flushed
once per tick, in order) and asks the host (`services.orchestrator.host.SessionHost`) for the
few things that must be atomic (bumping the epoch together with the `interrupted` event) or
slow (saving the session, loading models).
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from typing import Any

import numpy as np
from prometheus_client import Counter, Histogram

from services.orchestrator.config import TurnSettings
from services.orchestrator.end_of_turn import EndOfTurnPolicy, ScoreNeeded
from services.orchestrator.endpoint import SpeechStart, TurnEnd
from services.orchestrator.host import SessionHost
from services.orchestrator.pipeline import PIPELINES, PipelineConfig, PipelineContext
from services.orchestrator.preempt import PREEMPTIONS, Preemption, same_words
from services.orchestrator.reply import ReplyAudio
from services.orchestrator.turn import Turn, Waiting
from shared import protocol as p
from shared.config import Settings
from shared.images import image_part
from shared.messages import (
    Audio,
    AudioOut,
    ClientEvent,
    Command,
    ContextSet,
    Detached,
    Image,
    JobFailed,
    JobLost,
    LlmDone,
    LlmPlan,
    LlmToken,
    ScoredAudio,
    SessionStart,
    SpokenReply,
    SttJob,
    SttResult,
    TtsJob,
    TtsProgress,
    job_shard,
    job_stream_for,
    llm_job,
    out_stream,
    partial_jobs_stream,
)
from shared.sessions import Session, TurnRecord, id_order
from shared.vad import WINDOW

log = logging.getLogger("jarvis.orchestrator.session")

TURN_LATENCY = Histogram(
    "jarvis_turn_latency_seconds",
    "Time from the end of the user's speech to each stage of the reply",
    ["stage"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20),
)
TURNS = Counter("jarvis_turns_total", "Turns by outcome", ["outcome"])
BARGE_INS = Counter("jarvis_barge_ins_total", "Replies cut off by the user", ["reason"])
SPECULATION = Counter(
    "jarvis_pause_transcripts_total",
    "Transcripts of the turn so far made at a pause: used as the turn's transcript, or wasted "
    "(the user went on)",
    ["outcome"],
)


def observe(metrics: p.Metrics) -> None:
    for stage in ("end_of_turn", "transcript", "first_token", "first_audio", "total"):
        v = getattr(metrics, f"{stage}_ms")
        if v is not None:
            TURN_LATENCY.labels(stage).observe(v / 1000)


# what a listener says to show they follow, not to take the turn (hums are spelled every way:
# "mhm", "mm-hmm", "MHN", so any word of m, h and n only counts as one too), and the words
# Whisper makes up around a hum ("and HM.", "Thank you.")
BACKCHANNELS = frozenset(
    {"uh", "huh", "um", "umm", "ah", "oh", "yeah", "yep", "yes", "ok", "okay", "right", "sure", "aha"}
    | {"and", "you", "thank", "thanks"}
)
_HUM = re.compile(r"[mhn]+")
MAX_REDISPATCH = 2  # a turn's job is run again at most this often after its worker died


def _has_words(text: str) -> bool:
    """Whether a short sound's transcript is more than a backchannel or nothing."""
    words = [w for w in re.split(r"[^\w']+", text.lower()) if w]
    return any(w not in BACKCHANNELS and not _HUM.fullmatch(w) for w in words)


class SessionRunner:
    def __init__(
        self,
        host: SessionHost,
        session: Session,
        epoch: int,
        cursor: bytes | str,
        settings: Settings,
        turns: TurnSettings,
        vad_stream: Any | None = None,
    ) -> None:
        self.host = host
        self.settings = settings
        self.cfg = turns
        self.endpoint = turns.endpoint
        self.session = session
        self.sid = session.id
        self.epoch = epoch
        self.cursor = cursor  # last in:{sid} id handled
        self.safe_cursor = cursor  # last id at which no turn was in progress (takeover replays from here)
        conf = session.config
        self.pipeline: PipelineConfig = PIPELINES.get(session.pipeline, PIPELINES["sts"])
        self.trigger = p.Trigger(conf.get("trigger") or self.pipeline.trigger)
        self.client_vad = bool(conf.get("client_vad", False))
        self.voice: str | None = conf.get("options", {}).get("voice")
        self.speak: bool | None = conf.get("speak")  # `output`: None = as the pipeline does
        # the latest turns' reply audio (not their input audio), for a `truncate` after they played
        self.recent: deque[tuple[int, ReplyAudio]] = deque(maxlen=4)
        self.ctx = PipelineContext(sample_rate=conf.get("sample_rate", 16000))
        self.vad_stream = vad_stream
        self.detector = EndOfTurnPolicy(self.endpoint)
        self.state = p.State.IDLE
        self.turn: Turn | None = None  # the turn being answered
        self.last: Turn | None = None  # the previous turn, while its audio may still be playing
        # speech waiting its turn: in continuous mode each segment said while a turn is answered;
        # with server VAD, what was said over a turn too long to continue (`_full`), joined into
        # turns of up to `max_recording_s` each
        self.queued: list[Waiting] = []
        self.partial_at = 0  # stream sample of the last partial transcript request
        self.partial_out = False
        self.detached_at: float | None = None
        self.speech_started = False
        # the user's words not yet in a turn: audio that begins the next turn (a continuation,
        # or the short sounds that turned out to be a barge-in), and short sounds over a reply
        # awaiting their probe transcript (probe number -> audio)
        self.prefix = b""
        self.held: dict[int, bytes] = {}
        self.probes = 0
        # pauses whose transcript was asked for (end-of-turn request -> end of its speech, ms),
        # and the transcripts that came back without ending the turn (end ms -> result)
        self.pauses: dict[int, float] = {}
        self.paused_text: dict[float, SttResult] = {}
        self.bumping = False  # an epoch bump (barge-in, continuation) is in flight
        self.ended_early: tuple[float, float] | None = None  # a turn end that came before it landed
        self.orphaned: tuple[int, str, float] | None = None  # (turn, kind, since): no live worker for it
        self.received_at = 0.0  # wall clock when the host last read an audio frame (replays included)
        self.lost: dict[tuple[int, str], int] = {}  # (turn, kind) -> jobs lost with their worker
        # a reply started on a pause transcript, held until the turn ends (`preempt.py`)
        self.preemptive = turns.preemptive_for(settings.profile)
        self.preempt: Preemption | None = None

    # ---- output helpers -----------------------------------------------------------

    def event(self, ev: p._Event) -> None:
        self.host.put(out_stream(self.sid), ClientEvent(p.dump(ev)), self.settings.out_maxlen)

    def job(self, kind: str, msg: Any) -> None:
        self.host.put(
            job_stream_for(kind, self.sid, self.settings.job_shards), msg, self.settings.jobs_maxlen
        )

    def set_state(self, state: p.State) -> None:
        if state != self.state:
            prev, self.state = self.state, state
            self.event(p.StateChanged(state=state, previous=prev))

    def error(self, code: p.ErrorCode, message: str) -> None:
        self.event(p.Error(code=code, message=message))

    @property
    def next_turn(self) -> int:
        return len(self.session.history) + 1

    def note_progress(self) -> None:
        """A stage of the current turn showed life (e.g. a model load reported progress):
        the stage timeout counts from now."""
        if self.turn is not None:
            self.turn.progress_ts = time.time()

    # ---- lifecycle --------------------------------------------------------------------

    def ready(self, resumed: bool) -> None:
        self.event(
            p.Ready(
                session_id=self.sid,
                pipeline=self.pipeline.name,
                trigger=self.trigger,
                sample_rate=self.ctx.sample_rate,
                resumed=resumed,
                turns=len(self.session.history),
            )
        )

    async def on_start(self, start: SessionStart, resumed: bool) -> None:
        """A client (re)connected: apply its settings, say ready, show the state."""
        self.detached_at = None
        if start.pipeline not in PIPELINES:  # the gateway checks too: no `ready` for a start refused
            self.event(
                p.Error(
                    code=p.ErrorCode.UNKNOWN_PIPELINE,
                    message=f"unknown pipeline {start.pipeline!r}; have {sorted(PIPELINES)}",
                    fatal=True,
                )
            )
            return
        self.pipeline = PIPELINES[start.pipeline]
        self.session.pipeline = start.pipeline
        self.trigger = p.Trigger(start.trigger or self.pipeline.trigger)
        self.client_vad = start.client_vad
        self.voice = start.options.get("voice", self.voice)
        self.ctx.sample_rate = start.sample_rate
        self.session.config = {
            "trigger": self.trigger.value,
            "client_vad": self.client_vad,
            "sample_rate": start.sample_rate,
            "options": start.options,
        }
        self.ready(resumed)
        if self.state == p.State.IDLE:
            self.set_state(p.State.LOADING)
            # off the caller's loop: one session's cold load must not hold up other starts
            self.host.spawn(self._prewarm())
        else:
            self.event(p.StateChanged(state=self.state))

    async def _prewarm(self) -> None:
        try:
            await self.host.prepare(self, self.pipeline.models, priority="prewarm")
        finally:
            if self.state == p.State.LOADING:
                self.set_state(p.State.LISTENING)
                await self.host.flush()

    # ---- input ----------------------------------------------------------------------

    async def handle(self, msg: Any) -> None:
        if isinstance(msg, ScoredAudio):  # the audio path first
            self.on_scored(msg)
            return
        if isinstance(msg, Audio):
            self.on_audio(msg)
            return
        if self.preempt is not None and self.preempt.owns(msg) and not isinstance(msg, SttResult):
            self.preempt.hold(msg)  # a result of the preemptive reply: held until the turn ends
            return
        if self.turn is not None and isinstance(msg, (SttResult, LlmToken, LlmDone, TtsProgress, ContextSet)):
            self.turn.progress_ts = time.time()
        if isinstance(msg, Command):
            await self.on_command(msg.message, msg.ts)
        elif isinstance(msg, Detached):
            self.detached_at = time.time()
        elif isinstance(msg, Image):
            self.ctx.image, self.ctx.image_mime = msg.data, msg.mime
        elif isinstance(msg, SttResult):
            self.on_transcript(msg)
        elif isinstance(msg, LlmToken):
            self.on_token(msg)
        elif isinstance(msg, ContextSet):
            if msg.epoch == self.epoch:
                if msg.value is None:
                    self.session.context.pop(msg.key, None)
                else:
                    self.session.context[msg.key] = msg.value
        elif isinstance(msg, LlmDone):
            self.on_llm_done(msg)
        elif isinstance(msg, TtsProgress):
            self.on_tts(msg)
        elif isinstance(msg, AudioOut):
            self.on_relayed_audio(msg)
        elif isinstance(msg, JobFailed):
            self.on_failed(msg)
        elif isinstance(msg, JobLost):
            self.on_lost(msg)
        elif isinstance(msg, SessionStart):
            await self.on_start(msg, resumed=True)

    def on_audio(self, msg: Audio) -> None:
        ctx = self.ctx
        ctx.append(msg.pcm, msg.ts)
        server_vad = self.trigger in (p.Trigger.VAD, p.Trigger.CONTINUOUS) and not self.client_vad
        if server_vad and self.vad_stream is not None:
            windows = ctx.vad_windows(msg.pcm, WINDOW)
            if len(windows):
                self.host.score_vad(self, windows, msg.ts)  # in the host's next batched VAD call
            if not self.detector.in_speech and not ctx.recording:
                self._trim_idle()
        elif not ctx.recording:
            self._trim_idle()

    def on_scored(self, msg: ScoredAudio) -> None:
        """Windows the gateway scored: their audio (a silent stretch's is not sent: zeros stand
        in for it, so stream positions stay the audio's) and one probability each, fed to the
        detector in order, exactly as if scored here."""
        ctx = self.ctx
        probs = np.frombuffer(msg.probs, dtype="<f4")
        ctx.append(msg.pcm or bytes(2 * WINDOW * len(probs)), msg.ts)
        if self.trigger in (p.Trigger.VAD, p.Trigger.CONTINUOUS) and not self.client_vad:
            for prob in probs.tolist():
                self.on_vad(prob, msg.ts)
            if not self.detector.in_speech and not ctx.recording:
                self._trim_idle()
        elif not ctx.recording:
            self._trim_idle()

    def _trim_idle(self) -> None:
        keep = self.ctx.ms_to_sample(self.endpoint.pre_roll_ms + self.endpoint.min_speech_ms + 600)
        if self.ctx.samples_in - self.ctx.audio_start > 3 * keep:
            self.ctx.keep_from(self.ctx.samples_in - keep)

    def on_vad(self, prob: float, ts: float) -> None:
        for ev in self.detector.feed(prob):
            if isinstance(ev, SpeechStart):
                self.on_speech_start()
            elif isinstance(ev, TurnEnd):
                self.on_speech_end(ev.start_ms, ev.end_ms, ts)
            elif isinstance(ev, ScoreNeeded):
                self.on_pause(ev, ts)
        if self.preempt is not None and self.detector.in_speech and not self.detector.silence_ms:
            self._drop_preemption("the user went on")
        if self.detector.in_speech:
            self._maybe_barge_in()
            self._maybe_partial()
        elif self.state is not p.State.SPEAKING:
            return
        elif self.detector.speech_ms and self.detector.silence_ms < self.endpoint.end_silence_ms:
            self._pause_reply()  # a sound began: hold the reply until we know what it is
        elif not self.held:  # the sound died away before it counted as speech
            self._resume_reply()

    # ---- talking over the reply -----------------------------------------------------------

    def _playing(self) -> Turn | None:
        """The turn whose reply audio the client is playing now (server VAD only)."""
        if self.state != p.State.SPEAKING or self.trigger != p.Trigger.VAD or self.client_vad:
            return None
        return self.turn or self.last

    def _pause_reply(self) -> None:
        turn = self._playing()
        if turn is not None and turn.audio.paused_at is None:
            turn.audio.pause(time.time())
            self.event(p.Playback(turn=turn.n, action="pause"))

    def _resume_reply(self) -> None:
        turn = self._playing()
        if turn is not None and turn.audio.paused_at is not None:
            turn.audio.resume(time.time())
            self.event(p.Playback(turn=turn.n, action="resume"))

    def _unheard(self) -> Turn | None:
        """The spoken turn being answered whose reply the user has not (really) heard yet."""
        turn = self.turn or self.last
        if turn is None or not turn.pcm or self.trigger != p.Trigger.VAD or self.client_vad:
            return None
        if self.state == p.State.THINKING:
            return turn
        if (
            self.state == p.State.SPEAKING
            and turn.audio.played(time.time()) * 1000 < self.endpoint.continuation_grace_ms
        ):
            return turn
        return None

    def _full(self, pcm: bytes, more: bytes = b"") -> bool:
        """Whether `pcm` (and `more`) hold as much audio as one turn may (`max_recording_s`): a
        turn that long is not continued but answered, and the speech after it waits for the next."""
        limit = 2 * self.ctx.ms_to_sample(self.settings.max_recording_s * 1000)  # 16-bit samples
        return len(pcm) + len(more) >= limit

    def continue_turn(self, turn: Turn) -> None:
        """The user went on talking before hearing the reply: cancel it, keep their audio so far
        as the start of the same turn (answered once, all words transcribed together). A turn
        whose audio is full already is left to be answered: this speech is held over
        (`_hold_over`) and begins the next turn."""
        if (self.turn or self.last) is not turn or self.bumping or self._full(turn.pcm, self.prefix):
            return
        self.bumping = True  # until the epoch bump lands, a turn end waits in the prefix
        self.prefix = turn.pcm + self.prefix
        self.turn = None
        self.last = None
        if self.session.history and self.session.history[-1].turn == turn.n:
            self.session.history.pop()  # answered but not heard: it is answered again, whole
            self.host.spawn(self.host.save(self))
        self.host.spawn(self._continued(turn))

    async def _continued(self, turn: Turn) -> None:
        try:
            self.epoch = await self.host.bump_epoch(self, p.Interrupted(turn=turn.n, continued=True))
        finally:
            self.bumping = False
        log.info("turn continues", extra={"session": self.sid, "turn": turn.n})
        BARGE_INS.labels("continued").inc()
        self.host.spawn(self.host.release(self))
        self.set_state(p.State.LISTENING)
        await self._answer_ended_early()

    async def _answer_ended_early(self) -> None:
        """The user's speech ended while an epoch bump was in flight: answer it now."""
        if self.ended_early is not None and self.turn is None:
            (t_eos, decided), self.ended_early = self.ended_early, None
            pcm, self.prefix = self.prefix, b""
            self._begin(pcm, t_eos, decided)
            await self.host.flush()

    def _begin(self, pcm: bytes, t_eos: float, decided_ts: float) -> None:
        """Answer `pcm` now, or, where speech held over waits before it, after that speech."""
        if self.queued and self.trigger == p.Trigger.VAD:
            self._hold_over(pcm, t_eos, decided_ts)
            self._next_queued()
        else:
            self.start_audio_turn(pcm, t_eos, decided_ts)

    def _hold_over(self, pcm: bytes, t_eos: float, decided_ts: float) -> None:
        """Speech said over a turn too long to continue, or after such speech: it waits until
        that turn is answered, then begins the next one. It joins the speech waiting before it
        while that is not full, so no waiting turn holds more than `max_recording_s` and one
        stretch of speech."""
        log.info("speech held over for the next turn", extra={"session": self.sid})
        last = self.queued[-1] if self.queued else None
        if last is not None and not self._full(last.pcm):
            last.pcm += pcm
            last.t_eos, last.decided_ts, last.input_end = t_eos, decided_ts, self.cursor
        else:
            self.queued.append(Waiting(pcm, t_eos, decided_ts, self.cursor))

    async def barge_in(self) -> None:
        """Words over a reply the user heard: cut it, and the words begin the next turn."""
        self.prefix += b"".join(self.held.values())
        self.held.clear()
        await self.interrupt(reason="speech")

    def _probe(self, pcm: bytes) -> None:
        """A short sound over the reply: ask STT whether it holds words (the reply stays paused)."""
        self.probes += 1
        self.held[self.probes] = pcm
        self._decode(pcm, probe=self.probes)

    def _decode(self, pcm: bytes, probe: int = 0, pause: int = 0) -> None:
        """An STT job for the next turn's audio that is not its final: a probe or a pause."""
        rate = self.ctx.sample_rate
        self.job(
            "stt",
            SttJob(self.sid, self.next_turn, self.epoch, pcm, rate, False, time.time(), None, probe, pause),
        )

    def on_probe(self, r: SttResult) -> None:
        pcm = self.held.get(r.probe)
        if pcm is None or r.epoch != self.epoch:
            return
        if _has_words(r.text):
            log.info("barge-in by words %r", r.text, extra={"session": self.sid})
            self.host.spawn(self._barge_in_then_answer())
            return
        del self.held[r.probe]  # a cough, an "mhm": the reply goes on
        if not self.held and not self.detector.speech_ms:
            self._resume_reply()

    async def _barge_in_then_answer(self) -> None:
        if not self.held:
            return
        await self.barge_in()
        if not self.detector.speech_ms and self.turn is None and self.prefix:
            pcm, self.prefix = self.prefix, b""
            now = time.time()
            self._begin(pcm, now, now)
            await self.host.flush()

    def on_speech_start(self) -> None:
        self.speech_started = True
        self.partial_at = self.ctx.samples_in
        self.event(p.VadEvent(speaking=True))
        unheard = self._unheard()
        if unheard is not None:
            self.continue_turn(unheard)
        elif self.state == p.State.LISTENING:
            self.host.spawn(self.host.prepare(self, self.pipeline.models, priority="prewarm", quiet=True))

    def _maybe_barge_in(self) -> None:
        if self.trigger == p.Trigger.CONTINUOUS or not self.speech_started:
            return
        busy = (self.turn or self.last) is not None and self.state in (p.State.THINKING, p.State.SPEAKING)
        if busy and self.detector.speech_ms >= self.endpoint.barge_in_ms and self._unheard() is None:
            self.host.spawn(self.barge_in())

    def _maybe_partial(self) -> None:
        every = self.ctx.ms_to_sample(self.cfg.partial_interval_ms)
        if not every or self.partial_out or self.state != p.State.LISTENING or not self.speech_started:
            return
        if self.detector.silence_ms >= self.detector.config.candidate_ms:
            return  # a pause: its words go to the pause transcript; nothing new to show, CPU to spare
        if self.ctx.samples_in - self.partial_at >= every:
            self.partial_at = self.ctx.samples_in
            self.partial_out = True
            start = self.ctx.samples_in - self.ctx.ms_to_sample(
                self.detector.speech_ms + self.endpoint.pre_roll_ms
            )
            pcm = self.ctx.slice(start, self.ctx.samples_in)
            job = SttJob(self.sid, self.next_turn, self.epoch, pcm, self.ctx.sample_rate, True, time.time())
            stream = partial_jobs_stream("stt", job_shard(self.sid, self.settings.job_shards))
            self.host.put(stream, job, self.settings.jobs_maxlen)

    def on_pause(self, ev: ScoreNeeded, ts: float) -> None:
        """A pause in the user's speech reached the candidate silence: is the thought finished?"""
        if self.bumping:
            return  # the turn's audio is still being handed over: the ceiling decides this one
        busy = (self.turn or self.last) is not None and self.state in (p.State.THINKING, p.State.SPEAKING)
        if busy:  # a sound over the reply: judge it now, not after the ceiling
            self.detector.reset(keep_clock=True)
            self.on_speech_end(ev.start_ms, ev.end_ms, ts)
            return
        if not ev.text or self.queued:
            return  # no transcript wanted (an audio-only mode; speech held over): the ceiling decides
        a = self.ctx.ms_to_sample(ev.start_ms - self.endpoint.pre_roll_ms)
        b = self.ctx.ms_to_sample(ev.end_ms + self.endpoint.post_roll_ms)
        pcm = self.prefix + self.ctx.slice(a, b)
        self.pauses[ev.request] = ev.end_ms
        self._decode(pcm, pause=ev.request)

    def on_pause_transcript(self, r: SttResult) -> None:
        end_ms = self.pauses.pop(r.pause, None)
        if end_ms is None:
            return
        turn = self.turn
        if turn is not None and turn.awaiting == r.pause:  # the turn ended at the ceiling meanwhile
            turn.awaiting = 0
            self.on_transcript(SttResult(turn.n, r.epoch, r.text, True, r.elapsed_ms, r.ts))
            return
        events = self.detector.score(r.pause, text=r.text)
        end = next((e for e in events if isinstance(e, TurnEnd)), None)
        if end is not None:  # a finished thought: the turn ends at this pause, with this transcript
            SPECULATION.labels("used").inc()
            self.on_speech_end(end.start_ms, end.end_ms, time.time(), transcript=r)
        else:
            self.paused_text[end_ms] = r  # the ceiling may still end the turn at this pause
            if len(self.paused_text) > 8:
                self.paused_text.pop(next(iter(self.paused_text)))
            self._start_preemption(r, end_ms)

    def on_speech_end(
        self, start_ms: float, end_ms: float, decided_ts: float, transcript: SttResult | None = None
    ) -> None:
        """The detector closed a stretch of speech in stream time [start_ms, end_ms)."""
        if not self.speech_started:
            return
        self.speech_started = False
        self.event(p.VadEvent(speaking=False))
        ctx = self.ctx
        a = ctx.ms_to_sample(start_ms - self.endpoint.pre_roll_ms)
        b = ctx.ms_to_sample(end_ms + self.endpoint.post_roll_ms)
        pcm = ctx.slice(a, b)
        t_eos = ctx.ts_of_sample(ctx.ms_to_sample(end_ms))
        ctx.keep_from(b)
        if self.preempt is not None and self.preempt.end_ms != end_ms:
            self._drop_preemption("the turn ended elsewhere")  # bumps: the turn is answered after it
        if self.bumping:  # the cancelled reply's epoch is still being bumped: answer after it
            self.prefix += pcm
            self.ended_early = (t_eos, decided_ts)
            return
        if self.state in (p.State.THINKING, p.State.SPEAKING) and (self.turn or self.last) is not None:
            if self.trigger == p.Trigger.CONTINUOUS:
                self.queued.append(Waiting(pcm, t_eos, decided_ts, self.cursor))
            elif self.trigger == p.Trigger.VAD and not self.client_vad:
                unheard = self._unheard()
                if unheard is not None and self._full(unheard.pcm, self.prefix):
                    self._hold_over(pcm, t_eos, decided_ts)  # over a turn too long to continue
                else:
                    self._probe(pcm)  # too short to interrupt at once: words, or a cough / an "mhm"?
            return
        pcm, self.prefix = self.prefix + pcm, b""
        if self.queued and self.trigger == p.Trigger.VAD:  # speech held over waits before this
            self.paused_text.clear()
            self.pauses = {}
            self._begin(pcm, t_eos, decided_ts)
            return
        # the transcript of this very pause may be known, or on its way: don't decode it twice
        if transcript is None:
            transcript = self.paused_text.pop(end_ms, None)
        awaiting = (
            0 if transcript is not None else next((k for k, e in self.pauses.items() if e == end_ms), 0)
        )
        wasted = len(self.paused_text) + len(self.pauses) - (1 if awaiting else 0)
        if wasted > 0:
            SPECULATION.labels("wasted").inc(wasted)
        self.paused_text.clear()
        self.pauses = {awaiting: end_ms} if awaiting else {}
        self.start_audio_turn(pcm, t_eos, decided_ts, transcript=transcript, awaiting=awaiting)

    async def on_command(self, msg: p.RelayedMessage, ts: float) -> None:
        match msg:
            case p.Text():
                if (self.turn or self.last) is not None:
                    await self.interrupt(reason="text")
                self.start_text_turn(msg.text, ts, self.speaks if msg.speak is None else msg.speak)
            case p.Interrupt():
                await self.interrupt(reason="client")
                self._next_queued()  # the reply is cut, not the words said over it
            case p.Vad():
                if self.client_vad or self.trigger == p.Trigger.MANUAL:
                    self._recording(msg.speaking, ts)
            case p.Turn():
                if self.trigger == p.Trigger.MANUAL:
                    begin = msg.action == "begin"
                    if begin and (self.turn or self.last) is not None:
                        await self.interrupt(reason="push-to-talk")
                    self._recording(begin, ts)
                else:
                    self.error(
                        p.ErrorCode.INVALID,
                        f"'turn' needs the manual trigger; this session uses {self.trigger.value}",
                    )
            case p.Config():
                self.on_config(msg)
            case p.Stop():  # off the input loop: other sessions don't wait for the save
                self.host.spawn(self.host.end_session(self))
            case p.Instructions() | p.Respond() | p.Forget() | p.Truncate() | p.Output():
                await self.on_conversation_edit(msg, ts)

    def _recording(self, on: bool, ts: float) -> None:
        ctx = self.ctx
        if on and not ctx.recording:
            ctx.recording = True
            ctx.last_frame_ts = max(ctx.last_frame_ts, ts)  # the silent-stream timer counts from here
            ctx.keep_from(ctx.samples_in)
            self.speech_started = True
            self.event(p.VadEvent(speaking=True))
            if (self.turn or self.last) is not None and self.trigger != p.Trigger.MANUAL:
                self.host.spawn(self.interrupt(reason="client-vad"))
        elif not on and ctx.recording:
            ctx.recording = False
            self.speech_started = False
            self.event(p.VadEvent(speaking=False))
            pcm = ctx.slice(ctx.audio_start, ctx.samples_in)
            ctx.keep_from(ctx.samples_in)
            if pcm:
                self.start_audio_turn(pcm, ts, ts)

    def on_config(self, msg: p.Config) -> None:
        name = msg.pipeline
        if name is not None:
            if name not in PIPELINES:
                self.error(
                    p.ErrorCode.UNKNOWN_PIPELINE, f"unknown pipeline {name!r}; have {sorted(PIPELINES)}"
                )
                return
            self.pipeline = PIPELINES[name]  # the trigger stays unless the message names one
            self.session.pipeline = name
        if msg.trigger:
            self.trigger = msg.trigger
        options = msg.options
        if "voice" in options:
            self.voice = options["voice"]
        self.session.config.update({"trigger": self.trigger.value})
        self.session.config.setdefault("options", {}).update(options)
        self.ready(resumed=True)

    # ---- the conversation as a client edits it (the Realtime API's features) -------------

    @property
    def speaks(self) -> bool:
        """Whether a reply is spoken unless its message says otherwise."""
        return self.pipeline.speak if self.speak is None else self.speak

    async def on_conversation_edit(
        self, msg: p.Instructions | p.Respond | p.Forget | p.Truncate | p.Output, ts: float
    ) -> None:
        match msg:
            case p.Instructions():
                self.session.instructions = msg.text or None
                self.host.spawn(self.host.save(self))
            case p.Output():
                self.speak = msg.speak
                self.session.config["speak"] = msg.speak
            case p.Respond():
                if (self.turn or self.last) is not None:
                    await self.interrupt(reason="respond")
                self._drop_preemption("a respond request")
                turn = self._new_turn(ts, ts, speak=self.speaks if msg.speak is None else msg.speak)
                turn.transcript_ts = ts  # no words to wait for: the model answers the conversation
                self.host.spawn(self._dispatch_llm(turn))
            case p.Forget():
                self._forget(msg)
            case p.Truncate():
                await self._truncate(msg)

    def _forget(self, msg: p.Forget) -> None:
        rec = next((r for r in self.session.history if r.turn == msg.turn), None)
        if rec is None:
            self.error(p.ErrorCode.INVALID, f"no turn {msg.turn} in this session's history")
            return
        if msg.role == "user":
            rec.user = ""
        else:
            rec.assistant = ""
        self.event(p.Forgotten(turn=msg.turn, role=msg.role))
        self.host.spawn(self.host.save(self))

    async def _truncate(self, msg: p.Truncate) -> None:
        audio = next((a for n, a in reversed(self.recent) if n == msg.turn), None)
        if audio is None:
            self.error(p.ErrorCode.INVALID, f"turn {msg.turn} is not a recent reply: it can't be truncated")
            return
        heard = audio.heard_after(msg.audio_end_ms / 1000)
        playing = self.turn or self.last
        if playing is not None and playing.audio is audio:
            await self.interrupt(reason="truncate", heard=heard)
            self._next_queued()
            return
        rec = next((r for r in self.session.history if r.turn == msg.turn), None)
        if rec is None:
            self.error(p.ErrorCode.INVALID, f"turn {msg.turn} has no reply to truncate")
            return
        rec.assistant, rec.interrupted = heard, True
        rec.metrics["interrupted"] = True
        self.event(p.Interrupted(turn=msg.turn, spoken=heard))
        self.host.spawn(self.host.save(self))

    # ---- the turn -----------------------------------------------------------------------

    def _new_turn(self, t0: float, decided_ts: float, speak: bool) -> Turn:
        turn = Turn(n=self.next_turn, epoch=self.epoch, speak=speak, t0=t0, decided_ts=decided_ts)
        turn.audio.worker_sends_first = speak
        turn.input_end = self.cursor
        self.turn = turn
        self.recent.append((turn.n, turn.audio))
        self.last = None
        self.set_state(p.State.THINKING)
        return turn

    def start_audio_turn(
        self,
        pcm: bytes,
        t_eos: float,
        decided_ts: float,
        transcript: SttResult | None = None,
        awaiting: int = 0,
    ) -> None:
        """A turn of speech ended: transcribe `pcm` (unless its `transcript` is known already,
        or `awaiting` a pause's transcript of the same audio) and answer it."""
        turn = self._new_turn(t_eos, decided_ts, speak=self.speaks)
        turn.pcm = pcm
        self.partial_out = False
        if transcript is not None:  # the decision came with it: it is in hand from then on
            ts = max(transcript.ts, decided_ts)
            self.on_transcript(
                SttResult(turn.n, self.epoch, transcript.text, True, transcript.elapsed_ms, ts)
            )
            return
        if awaiting:
            turn.awaiting = awaiting
            SPECULATION.labels("used").inc()
            return
        if not self.host.may_load():
            # nothing to load: the STT job leaves with this tick's flush
            turn.prepared = True
            self.job("stt", self._stt_job(turn, pcm))
        else:
            self.host.spawn(self._dispatch_stt(turn, pcm))

    async def _dispatch_stt(self, turn: Turn, pcm: bytes) -> None:
        await self.host.prepare(self, self.pipeline.models, priority="turn")
        turn.prepared = True
        if self.turn is turn:
            self.job("stt", self._stt_job(turn, pcm))
            await self.host.flush()

    def _stt_job(self, turn: Turn, pcm: bytes) -> SttJob:
        """The turn's final STT job; where an LLM worker is known to run, it carries the LLM
        job's plan so the transcript starts the reply without another orchestrator hop."""
        plan = self._llm_plan(turn) if self.host.workers_known(self._llm_kind) else None
        turn.chained = plan is not None
        return SttJob(self.sid, turn.n, turn.epoch, pcm, self.ctx.sample_rate, False, time.time(), plan)

    @property
    def _llm_kind(self) -> str:
        return "vlm" if self.pipeline.vision else "llm"

    def _llm_plan(self, turn: Turn) -> LlmPlan:
        """Everything the turn's LLM job holds besides the user's words."""
        parts: list[dict[str, Any]] = []
        if self.pipeline.vision and self.ctx.image:
            turn.image = True
            parts = [image_part(self.ctx.image, self.ctx.image_mime)]
        messages = self.session.messages(self.settings.history_window)
        if self.session.instructions:  # replaces the LLM worker's configured system prompt
            messages = [{"role": "system", "content": self.session.instructions}, *messages]
        return LlmPlan(
            kind=self._llm_kind,
            messages=messages,
            context=dict(self.session.context),
            parts=parts,
            speak=SpokenReply(self.voice) if turn.speak else None,
        )

    def start_text_turn(self, text: str, ts: float, speak: bool) -> None:
        self._drop_preemption("a typed turn")
        turn = self._new_turn(ts, ts, speak=speak)
        turn.user = text
        turn.transcript_ts = ts
        self.event(p.TranscriptEvent(turn=turn.n, text=text, final=True))
        self.host.spawn(self._dispatch_llm(turn))

    def on_transcript(self, r: SttResult) -> None:
        if r.epoch != self.epoch:
            return
        if r.probe:
            self.on_probe(r)
            return
        if r.pause:
            self.on_pause_transcript(r)
            return
        if not r.final:
            self.partial_out = False
            if self.turn is None and r.turn == self.next_turn and self.speech_started and r.text:
                self.event(p.TranscriptEvent(turn=r.turn, text=r.text, final=False))
            return
        turn = self.turn
        if turn is None or r.turn != turn.n or turn.transcript_ts is not None:
            return
        turn.stt_ms = r.elapsed_ms
        turn.transcript_ts = r.ts
        text = r.text.strip()
        if not text:  # nothing intelligible: not a turn
            self.event(p.TranscriptEvent(turn=turn.n, text="", final=True))
            self.turn = None
            self.set_state(p.State.LISTENING)
            self._next_queued()
            return
        turn.user = text
        self.event(p.TranscriptEvent(turn=turn.n, text=text, final=True))
        if self.preempt is not None:
            self._adopt_preemption(turn)
        elif not turn.chained:  # else the STT worker started the LLM job with this transcript
            self.host.spawn(self._dispatch_llm(turn))

    async def _dispatch_llm(self, turn: Turn) -> None:
        if not turn.prepared:
            await self.host.prepare(self, self.pipeline.models, priority="turn")
            turn.prepared = True
        if self.turn is not turn:
            return
        kind = self._llm_kind
        if not await self.host.has_workers(kind):
            what = "vision model (set JARVIS_VLM_BASE_URL)" if kind == "vlm" else "language model"
            self.on_failed(JobFailed(kind, turn.n, turn.epoch, f"no {what} worker is running", time.time()))
            return
        plan = self._llm_plan(turn)
        stream, job = llm_job(self.sid, turn.n, turn.epoch, plan, turn.user, self.settings.job_shards)
        self.host.put(stream, job, self.settings.jobs_maxlen)
        await self.host.flush()

    def on_token(self, t: LlmToken) -> None:
        turn = self.turn
        if turn is None or t.epoch != self.epoch or t.turn != turn.n:
            return
        if turn.first_token_ts is None:
            turn.first_token_ts = t.ts
        turn.reply += t.text
        self.event(p.Reply(turn=turn.n, delta=t.text))
        if turn.speak:
            turn.audio.feed(t.text)
            self._pump_tts(turn)

    def on_llm_done(self, d: LlmDone) -> None:
        turn = self.turn
        if turn is None or d.epoch != self.epoch or d.turn != turn.n:
            return
        turn.llm_ms = d.elapsed_ms
        turn.llm_done = True
        if turn.speak:
            # cut at the token budget: the unfinished last sentence is neither spoken nor kept
            tail = turn.audio.flush(cut=d.truncated)
            if tail and turn.reply.endswith(tail):
                turn.reply = turn.reply[: -len(tail)].rstrip()
        self.event(p.Reply(turn=turn.n, final=True, text=turn.reply))
        self._pump_tts(turn)
        self._maybe_finish(turn)

    def _pump_tts(self, turn: Turn) -> None:
        s = turn.audio.next_job()
        if s is not None:
            self.job("tts", TtsJob(self.sid, turn.n, turn.epoch, s.seq, s.text, self.voice, time.time()))

    def on_tts(self, t: TtsProgress) -> None:
        turn = self.turn
        if turn is None or t.epoch != self.epoch or t.turn != turn.n:
            return
        if turn.relayed and t.seq == 0 and t.first_audio_ts and turn.audio.first_audio_ts is None:
            self.event(p.AudioStart(turn=turn.n, sample_rate=t.sample_rate))  # the held audio follows
        if turn.audio.progress(t):
            self.set_state(p.State.SPEAKING)
        if t.done:
            self._pump_tts(turn)
            self._maybe_finish(turn)

    def on_failed(self, f: JobFailed) -> None:
        turn = self.turn
        if turn is None or f.epoch != self.epoch or f.turn != turn.n:
            if f.epoch == self.epoch and f.kind == "stt":
                self.partial_out = False
            return
        log.warning("%s job failed: %s", f.kind, f.error, extra={"session": self.sid, "turn": turn.n})
        self.error(p.ErrorCode.MODEL_ERROR, f"the {f.kind} model failed: {f.error}")
        if f.kind == "tts":  # keep the text reply; skip the sentence's audio
            turn.audio.skip_inflight()
            self._pump_tts(turn)
            self._maybe_finish(turn)
            return
        turn.llm_done = True
        turn.audio.drop()
        self._maybe_finish(turn)

    def _maybe_finish(self, turn: Turn) -> None:
        if not turn.finished or self.turn is not turn:
            return
        turn.done_ts = time.time()
        if turn.first_audio_ts:
            self.event(p.AudioEnd(turn=turn.n))
        metrics = turn.metrics()
        self.event(metrics)
        observe(metrics)
        TURNS.labels("completed").inc()
        if turn.user or turn.reply:
            self.session.history.append(
                TurnRecord(
                    turn=turn.n,
                    user=turn.user,
                    assistant=turn.reply,
                    pipeline=self.pipeline.name,
                    image=turn.image,
                    metrics=Turn.record(metrics),
                )
            )
            self.host.spawn(self.host.save(self))
        if self.queued or self.prefix or self.detector.in_speech or self.ctx.recording:
            # words said after it are in no history yet: a new owner replays from its input's end
            self.safe_cursor = max(self.safe_cursor, turn.input_end, key=id_order)
        else:
            self.safe_cursor = self.cursor  # this turn is in history: a new owner must not replay it
        self.turn = None
        self.host.spawn(self.host.release(self))
        if turn.first_audio_ts and turn.audio.playback_end() > time.time():
            self.last = turn  # stay SPEAKING while the client plays the rest
        else:
            self.set_state(p.State.LISTENING)
            self._next_queued()

    def _next_queued(self) -> None:
        """Answer the speech waiting its turn; with server VAD, not while the user is speaking:
        what they say now joins it when they stop."""
        if self.trigger == p.Trigger.VAD and self.detector.in_speech:
            return
        if self.queued and self.turn is None:
            w = self.queued.pop(0)
            self.start_audio_turn(w.pcm, w.t_eos, w.decided_ts)
            if self.turn is not None:
                self.turn.input_end = w.input_end

    def tick(self, now: float) -> float | None:
        """Timers: playback end, a silent stream, a recording too long, a stage with no live
        worker or no progress, idle expiry. Returns the next deadline."""
        deadline: float | None = None
        if self.last is not None:
            end = self.last.audio.playback_end()
            if now >= end:
                self.last = None
                if self.turn is None:
                    self.set_state(p.State.LISTENING)
                    self._next_queued()
            else:
                deadline = end
        ctx = self.ctx
        if ctx.recording and (ctx.samples_in - ctx.audio_start) >= ctx.ms_to_sample(
            self.settings.max_recording_s * 1000
        ):
            self._recording(False, now)  # push to talk held (or the client's VAD stuck) too long
        if (self.detector.in_speech or ctx.recording and self.client_vad) and ctx.last_frame_ts:
            # frames replayed after a takeover carry old stamps: the stream stalls when frames
            # stop arriving, not when their stamps are old
            last = max(ctx.last_frame_ts, self.received_at)
            gap = now - last
            limit = (self.endpoint.end_silence_ms + 500) / 1000  # the plain silence rule: no audio at all
            if gap > limit:  # the client stopped sending audio mid-speech: end the turn
                if ctx.recording:
                    self._recording(False, now)
                else:
                    self._end_stalled_speech(now)
            else:
                d = last + limit
                deadline = d if deadline is None else min(deadline, d)
        turn = self.turn
        if turn is not None:
            self._check_workers(turn, now)
        turn = self.turn
        if turn is not None:
            limit = turn.progress_ts + self.cfg.stage_timeout_s
            if now > limit:  # a stage went silent (worker gone, model hung): don't leave the user waiting
                self.on_failed(
                    JobFailed(
                        "turn", turn.n, turn.epoch, f"no progress for {self.cfg.stage_timeout_s:.0f}s", now
                    )
                )
            else:
                deadline = limit if deadline is None else min(deadline, limit)
            if self.orphaned is not None:
                d = self.orphaned[2] + self.settings.worker_gone_s
                deadline = d if deadline is None else min(deadline, d)
        if (
            self.turn is None
            and self.last is None
            and not self.detector.in_speech
            and not self.detector.speech_ms
            and not (self.prefix or self.held or self.queued)
        ):
            # a new owner replays from here: keep the last stretch of audio before it, so the
            # pre-roll of speech that is starting now (not yet a turn) is replayed too
            lag = self.endpoint.pre_roll_ms + self.endpoint.min_speech_ms + 600
            ms, _ = id_order(self.cursor)
            lagged = f"{max(0, ms - int(lag))}-0"
            self.safe_cursor = max(self.safe_cursor, min(self.cursor, lagged, key=id_order), key=id_order)
        return deadline

    def _end_stalled_speech(self, now: float) -> None:
        """End the turn of a stream that stalled mid-speech, at the end of its last speech
        window, without advancing the detector's clock: stream time stays the audio's, so later
        turns' sample positions and metrics stay right."""
        det = self.detector
        end_ms = det.now_ms - det.silence_ms
        start_ms = end_ms - det.speech_ms
        det.reset(keep_clock=True)
        self.on_speech_end(start_ms, end_ms, now)

    def _waiting_on(self, turn: Turn) -> str | None:
        """The worker kind the turn waits for now."""
        if turn.transcript_ts is None:
            return "stt" if turn.pcm and turn.prepared else None
        if not turn.llm_done:
            return self._llm_kind if turn.prepared else None
        if turn.audio.inflight is not None:
            return "tts"
        return None

    def _check_workers(self, turn: Turn, now: float) -> None:
        """A turn waiting on a kind of worker none of which is alive gets a clear error after
        `worker_gone_s` (a restarting worker takes its job before that); its words are kept."""
        kind = self._waiting_on(turn)
        if kind is None or self.host.workers_known(kind):
            self.orphaned = None
            return
        if self.orphaned is None or self.orphaned[:2] != (turn.n, kind):
            self.orphaned = (turn.n, kind, now)
            return
        if now - self.orphaned[2] < self.settings.worker_gone_s:
            return
        self.orphaned = None
        log.warning("no %s worker is alive", kind, extra={"session": self.sid, "turn": turn.n})
        self.error(p.ErrorCode.MODEL_ERROR, f"no {kind} worker is running; the turn could not be answered")
        server_vad = self.trigger == p.Trigger.VAD and not self.client_vad
        if kind == "stt" and server_vad and (self.queued or self._full(turn.pcm, self.prefix)):
            # a whole turn: first in line
            self.queued.insert(0, Waiting(turn.pcm, turn.t0, turn.decided_ts, turn.input_end))
        elif kind == "stt":  # the words were not heard yet: they begin the next turn
            self.prefix = turn.pcm + self.prefix
        self.host.spawn(self.interrupt(reason="no-worker"))

    # ---- a job lost with its worker (or with Redis): run it again, keeping every word -----

    def on_lost(self, lost: JobLost) -> None:
        """A worker died holding this job: dispatch it again (a live or restarted worker takes
        it). A reply already streaming is started over under a new epoch."""
        if lost.epoch != self.epoch:
            return
        if lost.kind == "stt" and lost.partial:
            self.partial_out = False
            return
        if lost.kind == "stt" and lost.probe:
            pcm = self.held.get(lost.probe)
            if pcm is not None:
                job = SttJob(
                    self.sid,
                    self.next_turn,
                    self.epoch,
                    pcm,
                    self.ctx.sample_rate,
                    False,
                    time.time(),
                    probe=lost.probe,
                )
                self.job("stt", job)
            return
        turn = self.turn
        if turn is None or turn.n != lost.turn or turn.epoch != lost.epoch:
            return
        n = self.lost[(turn.n, lost.kind)] = self.lost.get((turn.n, lost.kind), 0) + 1
        if n > MAX_REDISPATCH:  # a job that kills every worker that takes it: stop feeding it
            self.lost.clear()
            self.on_failed(
                JobFailed(lost.kind, turn.n, turn.epoch, f"its worker died {n} times on it", time.time())
            )
            return
        log.warning(
            "a %s worker died holding this turn's job; running it again",
            lost.kind,
            extra={"session": self.sid, "turn": turn.n},
        )
        turn.progress_ts = time.time()
        if lost.kind == "stt":
            if turn.transcript_ts is None and turn.pcm:
                self.job("stt", self._stt_job(turn, turn.pcm))
        elif lost.kind == "tts":
            s = turn.audio.inflight
            if s is not None and s.seq == lost.seq and not s.done:
                self.job("tts", TtsJob(self.sid, turn.n, turn.epoch, s.seq, s.text, self.voice, time.time()))
        elif not turn.llm_done:
            if turn.reply or turn.audio.sentences:
                self.host.spawn(self.restart_turn(turn))
            else:
                self.host.spawn(self._dispatch_llm(turn))

    def recover(self) -> None:
        """Redis restarted: the turn's jobs and results of its last second may be gone. Run the
        turn again from what is known (its audio, or its words) under a new epoch."""
        if self.turn is not None:
            self.host.spawn(self.restart_turn(self.turn))

    async def restart_turn(self, turn: Turn) -> None:
        """Answer `turn` again from its words (or its audio) under a new epoch: whatever its
        earlier attempt still writes is refused, and the client drops the reply it showed
        (`interrupted` with `continued`, then the same turn's transcript)."""
        if self.turn is not turn or self.bumping:
            return
        self.bumping = True
        try:
            self.epoch = await self.host.bump_epoch(self, p.Interrupted(turn=turn.n, continued=True))
        finally:
            self.bumping = False
        if self.turn is not turn:
            return
        turn.epoch = self.epoch
        turn.reply, turn.first_token_ts, turn.llm_done = "", None, False
        audio = ReplyAudio(worker_sends_first=turn.speak)
        self.recent = deque(
            ((n, audio if n == turn.n else a) for n, a in self.recent), maxlen=self.recent.maxlen
        )
        turn.audio = audio
        turn.progress_ts = time.time()
        self.set_state(p.State.THINKING)
        if turn.transcript_ts is None and turn.pcm:
            self.job("stt", self._stt_job(turn, turn.pcm))
            await self.host.flush()
            return
        if turn.user:
            self.event(p.TranscriptEvent(turn=turn.n, text=turn.user, final=True))
        await self._dispatch_llm(turn)
        await self.host.flush()

    # ---- a preemptive reply (preempt.py): started at a pause, held until the turn ends -------

    def _start_preemption(self, r: SttResult, end_ms: float) -> None:
        """A pause transcript came back and the turn has not ended: start the reply on it."""
        text = r.text.strip()
        det = self.detector
        if (
            not self.preemptive
            or not text
            or not det.silence_ms  # stale: the user went on before it came back
            or abs(det.now_ms - det.silence_ms - end_ms) > 1
            or self.pipeline.vision  # the camera frame may change before the turn ends
            or self.bumping
            or self.state != p.State.LISTENING
            or (self.turn or self.last) is not None
            or not self.host.workers_known(self._llm_kind)
        ):
            return
        self._drop_preemption("a newer pause")
        if self.bumping:
            return
        now = time.time()
        turn = Turn(n=self.next_turn, epoch=self.epoch, speak=self.speaks, t0=now, decided_ts=now)
        self.preempt = Preemption(turn.n, self.epoch, text, end_ms, now)
        stream, job = llm_job(
            self.sid,
            turn.n,
            self.epoch,
            self._llm_plan(turn),
            text,
            self.settings.job_shards,
            preemptive=True,
        )
        self.host.put(stream, job, self.settings.jobs_maxlen)
        log.info("preemptive reply started", extra={"session": self.sid, "turn": turn.n})

    def _drop_preemption(self, why: str, answer: Turn | None = None) -> None:
        """The user went on (or the turn ended on other words): discard the held reply, and
        cancel its jobs with a new epoch (told to no client: it never saw the reply); then
        `answer` that turn afresh, if given."""
        pre, self.preempt = self.preempt, None
        if pre is None:
            return
        outcome = "wasted" if answer is None else "rerun"
        PREEMPTIONS.labels(outcome).inc()
        log.info("preemptive reply %s: %s", outcome, why, extra={"session": self.sid, "turn": pre.turn})
        if pre.epoch == self.epoch and not self.bumping:
            self.bumping = True  # until it lands, a turn end waits in the prefix
            self.host.spawn(self._quiet_bump(answer))
        elif answer is not None:
            answer.epoch = self.epoch
            self.host.spawn(self._dispatch_llm(answer))

    async def _quiet_bump(self, answer: Turn | None) -> None:
        try:
            self.epoch = await self.host.bump_epoch(self, None)
        finally:
            self.bumping = False
        self.partial_out = False  # a partial asked for under the old epoch never comes back
        if answer is not None and self.turn is answer:
            answer.epoch = self.epoch
            await self._dispatch_llm(answer)
            await self.host.flush()
        await self._answer_ended_early()

    def _adopt_preemption(self, turn: Turn) -> None:
        """The turn ended: if with the words the held reply answers, it is the turn's reply and
        what it holds goes out now; else the turn is answered afresh."""
        pre, self.preempt = self.preempt, None
        assert pre is not None
        if not (pre.turn == turn.n and pre.epoch == turn.epoch and same_words(pre.text, turn.user)):
            self.preempt = pre
            self._drop_preemption("the turn's words differ", answer=turn)
            return
        if not pre.usable:  # the words stand, the reply does not: answer again, now the turn has ended
            self.preempt = pre
            self._drop_preemption(pre.why_not, answer=turn)
            return
        PREEMPTIONS.labels("used").inc()
        turn.prepared = True
        turn.relayed = turn.speak
        now = time.time()
        for msg in pre.held:  # as the client would have had it, stamped now (when it gets it)
            if isinstance(msg, LlmToken):
                self.on_token(LlmToken(msg.turn, msg.epoch, msg.text, now))
            elif isinstance(msg, TtsProgress):
                first = now if msg.first_audio_ts else 0.0
                self.on_tts(
                    TtsProgress(
                        msg.turn,
                        msg.epoch,
                        msg.seq,
                        msg.samples,
                        msg.sample_rate,
                        first,
                        msg.done,
                        msg.elapsed_ms,
                        now,
                    )
                )
            elif isinstance(msg, AudioOut):
                self.on_relayed_audio(msg)
            elif isinstance(msg, ContextSet) and msg.value is None:
                self.session.context.pop(msg.key, None)
            elif isinstance(msg, ContextSet):
                self.session.context[msg.key] = msg.value
            elif isinstance(msg, LlmDone):
                self.on_llm_done(msg)
        log.info(
            "preemptive reply released (%d results held, %.0f ms ahead)",
            len(pre.held),
            (now - pre.started_ts) * 1000,
            extra={"session": self.sid, "turn": turn.n},
        )

    def on_relayed_audio(self, a: AudioOut) -> None:
        """Audio of a preemptive reply's first sentence, released: on to the client."""
        turn = self.turn
        if turn is not None and turn.relayed and a.turn == turn.n and a.epoch == self.epoch:
            self.host.put(out_stream(self.sid), a, self.settings.out_maxlen)

    # ---- barge-in -----------------------------------------------------------------------

    async def interrupt(self, reason: str, heard: str | None = None) -> None:
        """Cancel the reply: bump the epoch (workers drop the turn's jobs and results), tell
        the client to flush playback, keep in history only what the user heard (`heard`, when
        the client said how much it played)."""
        turn = self.turn or self.last
        if turn is None:
            return
        now = time.time()
        spoken = turn.audio.heard(now) if heard is None else heard
        self.turn = None
        self.last = None
        self.held.clear()
        turn.done_ts = now
        self.bumping = True
        try:
            self.epoch = await self.host.bump_epoch(self, p.Interrupted(turn=turn.n, spoken=spoken))
        finally:
            self.bumping = False
        log.info("interrupted (%s)", reason, extra={"session": self.sid, "turn": turn.n})
        BARGE_INS.labels(reason).inc()
        metrics = turn.metrics(interrupted=True)
        if self.session.history and self.session.history[-1].turn == turn.n:  # finished, still playing
            rec = self.session.history[-1]
            rec.assistant, rec.interrupted = spoken, True
            rec.metrics["interrupted"] = True
        elif turn.user or spoken:
            self.session.history.append(
                TurnRecord(
                    turn=turn.n,
                    user=turn.user,
                    assistant=spoken,
                    interrupted=True,
                    pipeline=self.pipeline.name,
                    image=turn.image,
                    metrics=Turn.record(metrics),
                )
            )
            self.event(metrics)
            observe(metrics)
            TURNS.labels("interrupted").inc()
        self.host.spawn(self.host.save(self))
        self.host.spawn(self.host.release(self))
        self.set_state(p.State.LISTENING)
        await self._answer_ended_early()
