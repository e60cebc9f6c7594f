"""End-of-turn detection for one session, on top of per-window VAD probabilities.

This module owns the decision "the user started / finished a turn"; it knows nothing about
audio, models or Redis. The orchestrator feeds one speech probability per VAD window
(``shared.vad``: 512 samples = 32 ms at 16 kHz) and gets typed events back.

All times are *stream time* in milliseconds: window ``k`` (0-based, counted since creation
or :meth:`EndpointDetector.reset`) covers ``[k * window_ms, (k + 1) * window_ms)``. They are
computed from the number of samples fed, never from a wall clock, so they are reproducible
and map straight back to sample offsets in the session's audio buffer
(``sample = ms * sample_rate / 1000``).

Semantics of :class:`EndpointDetector` (the knobs are
:class:`~services.orchestrator.config.EndpointSettings`):

* Hysteresis. While idle, a window is speech when ``prob >= threshold``. Once speech has
  begun, a window only counts as *silence* when ``prob < neg_threshold``; probabilities in
  between keep speech going. After silence has begun, only ``prob >= threshold`` resumes
  speech (an in-between window does not reset the silence timer).
* Candidate speech. The first speech window opens a *candidate* at the start of that window.
  It becomes a turn once its span (from its start to the end of its last speech window,
  short gaps included) reaches ``min_speech_ms``: then :class:`SpeechStart` is emitted once,
  with ``at_ms`` = when the speech actually began (not when it was confirmed). A click or
  cough shorter than ``min_speech_ms`` that is followed by ``end_silence_ms`` of silence is
  dropped without any event.
* End of turn. When ``end_silence_ms`` of silence has followed the last speech window of a
  confirmed turn, :class:`TurnEnd` is emitted with ``reason="silence"``, ``start_ms`` =
  the SpeechStart's ``at_ms`` and ``end_ms`` = the end of the last speech window.
* Maximum length. A turn never outlasts ``max_turn_ms`` (rounded up to the window grid).
  When its speech span reaches it, the turn is cut at the end of that speech window; when
  the limit passes during a pause, it is cut at the end of the last speech window. Either
  way: ``TurnEnd(reason="max_length")``. If the user keeps
  talking, the next speech window opens a new candidate, which goes through
  ``min_speech_ms`` again (so a continuation shorter than that is dropped like any blip).
* ``in_speech`` is True from SpeechStart until its TurnEnd (trailing silence included);
  ``speech_ms`` is the span of the current candidate or turn (0 when idle), which lets the
  orchestrator demand a longer minimum before it treats speech as a barge-in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from services.orchestrator.config import EndpointSettings

__all__ = ["EndpointDetector", "Event", "SpeechStart", "TurnEnd"]


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """A turn began: speech started at ``at_ms`` and has lasted at least min_speech_ms."""

    at_ms: float


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """A turn ended; its speech spans ``[start_ms, end_ms)`` of stream time."""

    start_ms: float
    end_ms: float
    reason: Literal["silence", "max_length"]

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


Event = SpeechStart | TurnEnd


class EndpointDetector:
    """Per-session turn state machine; feed one probability per VAD window."""

    __slots__ = ("_active", "_confirmed", "_last_end", "_silent", "_start", "_window", "config")

    def __init__(self, config: EndpointSettings | None = None) -> None:
        self.config = config or EndpointSettings()
        self._window = 0  # windows fed since creation / reset
        self.reset()

    def reset(self, keep_clock: bool = False) -> None:
        """Drop any candidate or open turn without emitting events.

        By default the stream clock restarts at 0 too (a fresh stream, e.g. after the VAD
        stream was reset). ``keep_clock=True`` keeps counting, for when the same audio
        stream continues (e.g. the client's own end-of-turn flag closed the turn).
        """
        if not keep_clock:
            self._window = 0
        self._active = False  # a candidate or turn is open
        self._confirmed = False  # ... and SpeechStart was emitted for it
        self._silent = False  # ... and silence has begun after its last speech window
        self._start = 0.0
        self._last_end = 0.0  # end of the last speech window

    @property
    def now_ms(self) -> float:
        """Stream time at the end of the last window fed."""
        return self._window * self.config.window_ms

    @property
    def in_speech(self) -> bool:
        """True between SpeechStart and its TurnEnd."""
        return self._confirmed

    @property
    def speech_ms(self) -> float:
        """Span of the current candidate or turn, start to end of its last speech window."""
        return self._last_end - self._start if self._active else 0.0

    @property
    def silence_ms(self) -> float:
        """Silence since the last speech window of the open candidate/turn (0 if none)."""
        return self.now_ms - self._last_end if self._active and self._silent else 0.0

    def feed(self, prob: float) -> list[Event]:
        """Advance one window with its speech probability; return the events it caused."""
        cfg = self.config
        start = self._window * cfg.window_ms
        self._window += 1
        end = self._window * cfg.window_ms
        events: list[Event] = []

        if not self._active:
            if prob >= cfg.threshold:
                self._active = True
                self._confirmed = False
                self._silent = False
                self._start = start
                self._last_end = end
                self._check_speech(events)
            return events

        if prob >= cfg.threshold or (not self._silent and prob >= cfg.neg_threshold):
            self._silent = False
            self._last_end = end
            self._check_speech(events)
            return events

        self._silent = True
        if end - self._last_end >= cfg.end_silence_ms:
            if self._confirmed:
                events.append(TurnEnd(self._start, self._last_end, "silence"))
            self._active = self._confirmed = self._silent = False
        elif end - self._start >= cfg.max_turn_ms:
            # out of time during a pause: cut at the pause (speech resuming opens a new turn)
            if self._confirmed:
                events.append(TurnEnd(self._start, self._last_end, "max_length"))
            self._active = self._confirmed = self._silent = False
        return events

    def _check_speech(self, events: list[Event]) -> None:
        cfg = self.config
        span = self._last_end - self._start
        if not self._confirmed and span >= cfg.min_speech_ms:
            self._confirmed = True
            events.append(SpeechStart(self._start))
        if self._confirmed and span >= cfg.max_turn_ms:
            events.append(TurnEnd(self._start, self._last_end, "max_length"))
            self._active = self._confirmed = self._silent = False

    def feed_many(self, probs: Iterable[float]) -> list[Event]:
        """Feed several windows in order; the concatenated events."""
        events: list[Event] = []
        for p in probs:
            events.extend(self.feed(p))
        return events
