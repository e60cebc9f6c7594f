"""The adaptive end-of-turn decision for one session: end a finished thought soon, wait for an
unfinished one. Pure logic: no audio, no models, no clock, no I/O.

It sits on top of :class:`EndpointDetector` (per-window VAD probabilities in, ``SpeechStart``
/ ``TurnEnd`` out, all in *stream time* ms) and owns one question: after how much silence is
the user done? The orchestrator drives it in three ways:

(a) ``feed(prob)`` once per VAD window, as it feeds the detector today;
(b) when a pause inside a turn reaches ``candidate_ms`` of silence, ``feed`` returns a
    :class:`ScoreNeeded`: "is the thought finished at this pause? score it" (Smart Turn on the
    turn's audio up to ``at_ms``, and/or a transcript of ``[start_ms, end_ms)``);
(c) ``score(request, audio=..., text=...)`` later, from wherever the scoring ran, returns a
    ``TurnEnd`` when the score says "complete" and the pause is still going on; otherwise
    nothing, and the turn ends only when the silence reaches ``ceiling_ms`` (the detector's own
    ``TurnEnd``).

Semantics:

* ``mode="silence"``: today's behaviour: the detector's ``end_silence_ms`` ends the turn and
  nothing is ever scored (``feed`` returns exactly the detector's events).
* Other modes: the detector runs with ``end_silence_ms = ceiling_ms``. Each pause of a
  confirmed turn (silence after its last speech window) is scored at most once, when its
  silence first reaches ``candidate_ms``; a new pause (speech resumed, then stopped again)
  is a new candidate with a new request id.
* A score for a request that is no longer current (speech resumed, the turn already ended,
  ``reset``) is ignored: ``score`` returns ``[]`` and changes nothing. So a slow score can
  never end a turn the user has carried on with.
* Missing signals count as "no opinion", and no opinion never ends a turn early: a failed
  or skipped Smart Turn call (``score(request)`` with nothing) just leaves the ceiling to end
  the turn. The fallback is "wait", never "cut".
* What "complete" means per mode (``p`` = Smart Turn's probability, ``cue`` =
  :func:`transcript_cue` of the text):

  ========================  ==========================================================
  ``smart_turn``            ``p >= complete_threshold``
  ``transcript``            ``cue == "complete"``
  ``smart_turn_unless_cue`` ``p >= complete_threshold and cue != "incomplete"`` (the
                            words can veto the audio); without ``p``: ``cue == "complete"``
  ``cue_else_smart_turn``   the words decide when they have an opinion (``"complete"`` /
                            ``"incomplete"``), the audio when they do not
  ========================  ==========================================================

* ``TurnEnd`` events are the detector's class, with the detector's ``start_ms`` / ``end_ms``
  (end = the end of the last speech window), so the orchestrator slices the turn's audio as
  today. ``reason`` is ``"silence"`` both for an early end and for the ceiling, and
  ``"max_length"`` as before; :attr:`EndOfTurnPolicy.last_decision` says how the last turn
  ended (early on a score, or at the ceiling) and with which score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from services.orchestrator.config import EndOfTurnConfig, EndpointSettings, Mode
from services.orchestrator.endpoint import EndpointDetector, SpeechStart, TurnEnd
from services.orchestrator.transcript_cues import Cue, transcript_cue

__all__ = [
    "Decision",
    "EndOfTurnConfig",
    "EndOfTurnPolicy",
    "Event",
    "Mode",
    "ScoreNeeded",
]


@dataclass(frozen=True, slots=True)
class ScoreNeeded:
    """A pause reached ``candidate_ms``: score whether the thought is finished.

    The turn's speech so far spans ``[start_ms, end_ms)``; ``at_ms`` is the stream time now
    (``end_ms`` + the silence so far). Smart Turn wants the audio up to ``at_ms`` (trailing
    silence included); a transcript wants ``[start_ms, end_ms)``. Answer with
    ``EndOfTurnPolicy.score(request, ...)``.
    """

    request: int
    start_ms: float
    end_ms: float
    at_ms: float
    audio: bool  # a Smart Turn probability is wanted
    text: bool  # a transcript is wanted


@dataclass(frozen=True, slots=True)
class Decision:
    """How the last turn ended: early on a score ("complete"), at the silence ceiling
    ("ceiling"), on plain silence ("silence" mode) or at the maximum length."""

    reason: Literal["complete", "ceiling", "silence", "max_length"]
    silence_ms: float  # silence after the last speech window when it was decided
    audio: float | None = None  # the Smart Turn probability of its last scored pause
    cue: Cue | None = None  # the transcript cue of its last scored pause


Event = SpeechStart | TurnEnd | ScoreNeeded


class EndOfTurnPolicy:
    """One session's end of turn: an :class:`EndpointDetector` plus the scoring of pauses."""

    __slots__ = (
        "_asked_end",
        "_last_audio",
        "_last_cue",
        "_next_request",
        "_pending",
        "_start",
        "config",
        "detector",
        "last_decision",
    )

    def __init__(
        self, endpoint: EndpointSettings | None = None, config: EndOfTurnConfig | None = None
    ) -> None:
        endpoint = endpoint or EndpointSettings()
        self.config = config or endpoint.end_of_turn
        if self.config.mode != "silence":
            endpoint = endpoint.model_copy(update={"end_silence_ms": self.config.ceiling_ms})
        self.detector = EndpointDetector(endpoint)
        self.last_decision: Decision | None = None
        self._next_request = 1
        self._clear_turn()

    def _clear_turn(self) -> None:
        self._start = 0.0  # SpeechStart.at_ms of the open turn
        self._pending: int | None = None  # the request for the current pause, if any
        self._asked_end: float | None = None  # end_ms of the pause last asked about
        self._last_audio: float | None = None
        self._last_cue: Cue | None = None

    # ---- what the orchestrator reads, as on the detector

    @property
    def endpoint(self) -> EndpointSettings:
        """The detector's config (its ``end_silence_ms`` is the ceiling in adaptive modes)."""
        return self.detector.config

    @property
    def now_ms(self) -> float:
        return self.detector.now_ms

    @property
    def in_speech(self) -> bool:
        return self.detector.in_speech

    @property
    def speech_ms(self) -> float:
        return self.detector.speech_ms

    @property
    def silence_ms(self) -> float:
        return self.detector.silence_ms

    @property
    def pending(self) -> int | None:
        """The request id awaiting a score, or None."""
        return self._pending

    def reset(self, keep_clock: bool = False) -> None:
        """Drop any open turn and pending request (see :meth:`EndpointDetector.reset`)."""
        self.detector.reset(keep_clock=keep_clock)
        self._clear_turn()

    # ---- (a) per VAD window, (b) the candidate

    def feed(self, prob: float) -> list[Event]:
        """Advance one VAD window; the detector's events, plus a ScoreNeeded at a candidate."""
        # the detector hands back a new list each window: extend it, no copy on the per-window path
        events = cast(list[Event], self.detector.feed(prob))
        for ev in events:
            if isinstance(ev, SpeechStart):
                self._clear_turn()
                self._start = ev.at_ms
            elif isinstance(ev, TurnEnd):
                silence = self.detector.now_ms - ev.end_ms
                if ev.reason == "max_length":
                    reason: Literal["complete", "ceiling", "silence", "max_length"] = "max_length"
                else:
                    reason = "silence" if self.config.mode == "silence" else "ceiling"
                self.last_decision = Decision(reason, silence, self._last_audio, self._last_cue)
                self._clear_turn()
        if self.config.mode == "silence" or not self.detector.in_speech:
            return events
        silence = self.detector.silence_ms
        if silence == 0.0:
            self._pending = None  # speech goes on: any score in flight is stale
            return events
        end = self.detector.now_ms - silence
        if silence >= self.config.candidate_ms and self._asked_end != end:
            self._asked_end = end
            self._pending = self._next_request
            self._next_request += 1
            events.append(
                ScoreNeeded(
                    request=self._pending,
                    start_ms=self._start,
                    end_ms=end,
                    at_ms=self.detector.now_ms,
                    audio=self.config.wants_audio,
                    text=self.config.wants_text,
                )
            )
        return events

    def feed_many(self, probs: list[float]) -> list[Event]:
        events: list[Event] = []
        for p in probs:
            events.extend(self.feed(p))
        return events

    # ---- (c) the score

    def score(self, request: int, *, audio: float | None = None, text: str | None = None) -> list[Event]:
        """Deliver the score of `request`: ``audio`` = Smart Turn's probability that the turn
        is complete, ``text`` = the transcript of the turn so far. Returns ``[TurnEnd]`` when
        the pause is still current and the score says complete, else ``[]``."""
        if audio is not None and not 0.0 <= audio <= 1.0:
            raise ValueError(f"audio must be a probability in [0, 1], got {audio}")
        if request != self._pending or not self.detector.in_speech or self.detector.silence_ms == 0.0:
            return []  # stale: speech resumed, the turn ended, or never asked
        self._pending = None
        cue: Cue | None = transcript_cue(text) if text is not None else None
        self._last_audio, self._last_cue = audio, cue
        if not self._complete(audio, cue):
            return []  # wait: the ceiling (or the next pause's score) ends it
        end = self.detector.now_ms - self.detector.silence_ms
        silence = self.detector.silence_ms
        ev = TurnEnd(self._start, end, "silence")
        self.last_decision = Decision("complete", silence, audio, cue)
        self.detector.reset(keep_clock=True)
        self._clear_turn()
        return [ev]

    def _complete(self, audio: float | None, cue: Cue | None) -> bool:
        mode, threshold = self.config.mode, self.config.complete_threshold
        if mode == "smart_turn":
            return audio is not None and audio >= threshold
        if mode == "transcript":
            return cue == "complete"
        audio_says = audio is not None and audio >= threshold
        if mode == "smart_turn_unless_cue":
            return cue == "complete" if audio is None else audio_says and cue != "incomplete"
        if mode == "cue_else_smart_turn":
            return cue == "complete" if cue in ("complete", "incomplete") else audio_says
        return False
