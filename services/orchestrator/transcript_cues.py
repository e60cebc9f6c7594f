"""Does a partial transcript sound like an unfinished thought? Words only, no audio, no models.

This module owns one judgement: given what the user has said so far (a partial transcript of
the current turn), is the thought visibly unfinished? A speaker who pauses after "I was
wondering", "and so", "my fellow" or a trailing "because" / "whether" / "that" / "the" has
not finished; one who pauses after "What time is it?" may have. The answer is a `Cue`:

* ``"incomplete"``: the text ends with a comma, a dash or an ellipsis; or its last word is a
  conjunction, a subordinator ("because", "whether", "if"), an article or possessive, or a
  filler ("um", "uh"), whatever follows; or, unless it ends with "?" or "!" (a question may
  end "... for?" or "... that?"), its last word is a preposition or a wh-word / "that" /
  "this", or its last words are a lead-in ("I was wondering", "I think", "my fellow",
  "tell me", "and so"). Waiting is right.
* ``"complete"``: it ends with ``.``, ``?`` or ``!`` and none of the above. Whisper punctuates
  fragments too (it writes "I was wondering." for a cut-off phrase), so the word rules take
  precedence over a full stop.
* ``"unknown"``: nothing to go on (empty text, or no final punctuation).

The rules are English; another language gets ``"unknown"`` from most of its text (the
policy then relies on the audio score or the ceiling).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["Cue", "transcript_cue"]

Cue = Literal["incomplete", "complete", "unknown"]

# A thought that stops on one of these words is not finished, whatever punctuation follows.
# fmt: off
_ALWAYS_INCOMPLETE = frozenset({
    "and", "or", "but", "nor", "because", "cause", "although", "though", "unless", "whereas",
    "whether", "if",
    "the", "a", "an", "my", "your", "our", "their", "its",
    "um", "uh", "er", "erm",
})
# These end a question ("What is it for?", "Who said that?") but not a statement: incomplete
# unless the text ends with "?" or "!". Words that often end a statement ("before", "in",
# "on", "her", "so", "some") are left out on purpose.
_INCOMPLETE_UNLESS_ASKED = frozenset({
    "that", "which", "who", "whom", "whose", "where", "when", "what", "how", "why", "than",
    "while", "since", "this", "these", "those", "his", "every", "each",
    "to", "of", "for", "with", "from", "at", "into", "onto", "toward", "towards", "upon", "via",
    "per", "between", "during", "without", "within", "against",
})
# fmt: on

# Multi-word lead-ins that announce more to come (matched at the very end of the text).
_TRAILING_PHRASES = tuple(
    tuple(p.split())
    for p in (
        "i was wondering",
        "i wonder",
        "i was thinking",
        "i think",
        "i guess",
        "i mean",
        "i want",
        "i need",
        "i would like",
        "i'd like",
        "you know",
        "tell me",
        "let me see",
        "let me think",
        "my fellow",
        "and so",
        "and then",
        "so basically",
        "the thing is",
        "what i mean is",
        "kind of",
        "sort of",
    )
)

_WORD = re.compile(r"[a-z']+")


def transcript_cue(text: str) -> Cue:
    """The cue of the last words of `text` (see the module docstring)."""
    stripped = text.strip()
    if not stripped:
        return "unknown"
    if stripped.endswith(("...", "…", ",", "-", "–", "—", ";", ":")):
        return "incomplete"
    words = _WORD.findall(stripped.lower().replace("’", "'"))
    if not words:
        return "unknown"
    last = words[-1]
    if last in _ALWAYS_INCOMPLETE:
        return "incomplete"
    if last in _INCOMPLETE_UNLESS_ASKED and not stripped.endswith(("?", "!")):
        return "incomplete"
    asked = stripped.endswith(("?", "!"))
    if not asked and any(tuple(words[-len(p) :]) == p for p in _TRAILING_PHRASES):
        return "incomplete"
    if stripped.endswith((".", "?", "!")):
        return "complete"
    return "unknown"
