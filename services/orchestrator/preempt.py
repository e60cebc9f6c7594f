"""A preemptive reply: the LLM started on a pause transcript (the speculative final) before the
end of the user's turn is confirmed.

Owns what such a reply has produced so far and what becomes of it: its tokens, the audio of its
first sentence (`TtsJob.hold`) and the other results of its jobs are *held* here, never sent to
the client nor written in history, until the turn ends with the same words (the runner then
replays them into the turn: the reply starts at once) or the user goes on (the runner discards
it, cancelling its jobs with a new epoch). Pure bookkeeping: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from shared.messages import AudioOut, ContextSet, JobFailed, JobLost, LlmDone, LlmToken, TtsProgress

PREEMPTIONS = Counter(
    "jarvis_preemptive_replies_total",
    "Replies started on a pause transcript before the turn ended: used (the turn ended with those "
    "words), wasted (the user went on: discarded), or rerun (kept the turn's words but had to be "
    "answered again: a tool with side effects, a failure)",
    ["outcome"],
)

Held = LlmToken | LlmDone | ContextSet | TtsProgress | AudioOut
_WORD = re.compile(r"[\w']+")


def same_words(a: str, b: str) -> bool:
    """Whether two transcripts say the same words (case, punctuation and spacing aside)."""
    return _WORD.findall(a.lower()) == _WORD.findall(b.lower())


@dataclass(slots=True)
class Preemption:
    turn: int  # the turn number it will be if the turn ends with these words
    epoch: int
    text: str  # the pause transcript it answers
    end_ms: float  # the end of the speech that transcript covers (stream time)
    started_ts: float
    held: list[Held] = field(default_factory=list)
    usable: bool = True  # False: it stopped at a tool with side effects, or a job failed
    why_not: str = ""

    def owns(self, msg: Any) -> bool:
        """Whether `msg` is a result of this reply's jobs (its LLM job, its first sentence's TTS
        job; STT results and failures of the same turn number are the user's turn's, not its)."""
        if isinstance(msg, (JobFailed, JobLost)) and msg.kind == "stt":
            return False
        return getattr(msg, "turn", None) == self.turn and getattr(msg, "epoch", None) == self.epoch

    def hold(self, msg: Any) -> None:
        if isinstance(msg, (JobFailed, JobLost)):
            self.usable, self.why_not = False, f"its {msg.kind} job failed"
        elif isinstance(msg, LlmDone) and msg.held_tool:
            self.usable, self.why_not = False, f"it stopped at the tool {msg.held_tool}"
        else:
            self.held.append(msg)
