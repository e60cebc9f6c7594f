"""Cutting a streamed LLM reply into sentences for TTS, as soon as each one closes.

This module owns the text side of "speak before the LLM has finished": the orchestrator
feeds every text delta of a reply to a :class:`SentenceSplitter` and sends each sentence it
returns to TTS; ``flush()`` at the end of the reply returns what is left. The LLM worker runs
one too, to start the first sentence's TTS job itself (``LlmJob.speak``): because the cuts
depend on the text alone, never on how it was chunked, both find the same first sentence.

Rules (all of them decided on the text alone, no model):

* A sentence ends at ``.``, ``!``, ``?``, ``…`` or a run of them (``?!``, ``...``),
  optionally followed by closing quotes/brackets/emphasis (``"`` ``'`` ``”`` ``)`` ``]`` ``*``),
  then whitespace. The boundary is only *confirmed* when the next non-space character has
  arrived (or at ``flush``): ``"3."`` may still become ``"3.5"``.
* Not a boundary: a period with no space after it (``3.14``, ``v1.2``, ``U.S.``, ``e.g.``);
  any terminator followed by a lower-case letter (``"Hi," she said``, ``etc. and``,
  ``wait... what``); titles and Latin abbreviations (``Mr. Dr. Mrs. Ms. Prof. St. vs.
  e.g. i.e. cf.``); ``No./Vol./Fig./p.`` before a number; single-letter initials before a
  capital (``J. R. R. Tolkien``); dotted acronyms (``U.S. Army``: a missed split only delays
  TTS, a wrong one breaks the prosody); a list number opening a sentence (``1. Buy milk``).
* Numbered lists written inline (``1. Buy milk 2. Get bread``): when a sentence opened with
  list number *k* and ``k+1.`` appears, the cut goes *before* ``k+1.``, giving
  ``"1. Buy milk"``, ``"2. Get bread"``.
* A newline always ends a sentence (markdown lists, paragraphs, headings).
* A run-on longer than ``max_chars`` (~200) is cut after a clause mark (``, ; :`` or a
  dash) followed by a space: the latest one between ``max_chars // 2`` and ``max_chars``,
  else the first one after ``max_chars``; past ``hard_max_chars`` (300) with no clause
  mark it is cut at the last space, so TTS never waits forever. The rule looks only at the
  text so far, so the result does not depend on how the reply was chunked into deltas.
* The first unit of a reply may be a clause: the first clause mark (``, ; :`` or a dash)
  followed by a space, with at least ``first_clause_words`` (4) words before it and no
  sentence end before it, ends the first unit ("Well, the sky is blue, because ..." gives
  "Well, the sky is blue,"). TTS starts on it a sentence sooner; Piper reads a unit ending
  in a comma with a continuing fall and the next unit follows while it plays
  (docs/BENCHMARKS.md, "First audio"). Later units are whole sentences again.
* What is emitted is cleaned for speech: markdown emphasis (``**bold**``, ``*it*``,
  ``__x__``, backticks), heading marks and leading bullets (``- ``, ``* ``, ``• ``) are
  removed, whitespace collapsed, and fragments with no letter or digit are dropped, so
  empty or whitespace-only sentences are never emitted.
"""

from __future__ import annotations

import re

__all__ = ["SentenceSplitter", "clean_for_speech"]

_TERMINALS = frozenset(".!?…")
_CLOSERS = frozenset("\"'”’»)]}*_`")
_SPACES = frozenset(" \t\r\f\v\u00a0")
_OPENERS = "\"'“‘«([{*_`"

# Never end a sentence with these (compared lower-case, without the final period).
_NEVER_END = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "st", "mt", "ft", "sgt", "capt", "col", "gen", "gov", "rev",
        "hon", "vs", "e.g", "i.e", "cf", "approx", "esp", "incl", "dept", "fig", "eq", "ref",
    }
)  # fmt: skip
# Not an end when a number follows ("No. 5", "Vol. 2", "p. 12").
_BEFORE_NUMBER = frozenset({"no", "nos", "vol", "vols", "p", "pp", "ch", "sec", "art", "op", "nr"})

_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_LIST_MARKER = re.compile(r"\s*(?:[-*•+]\s+)?(\d{1,3})\.\s")
_CLAUSE = re.compile(r"(?:[,;:]|\s[-–—]|[–—])(?=\s)")

_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3})(?=\S)(.+?)(?<=\S)\1")
_STRAY_MARKUP = re.compile(r"\*{2,}|_{2,}|`+")
_LEADING = re.compile(r"^(?:\s*(?:#{1,6}|>|[-*•+‣◦▪])\s+)+")
_WORDY = re.compile(r"\w")
_WORDY_RUN = re.compile(r"\w+(?:['’]\w+)*")
_WS = re.compile(r"\s+")


def clean_for_speech(text: str) -> str:
    """Strip markdown emphasis, headings and bullets; collapse whitespace. May return ''."""
    text = _LEADING.sub("", text.strip())
    text = _EMPHASIS.sub(r"\2", text)
    text = _STRAY_MARKUP.sub("", text)
    text = _LEADING.sub("", text)  # a bullet hidden behind emphasis: "**- x**"
    text = _WS.sub(" ", text).strip()
    return text if _WORDY.search(text) else ""


class SentenceSplitter:
    """Incremental sentence splitter for one reply: ``feed`` deltas, then ``flush``."""

    def __init__(self, max_chars: int = 200, hard_max_chars: int = 300, first_clause_words: int = 4) -> None:
        if not 0 < max_chars <= hard_max_chars:
            raise ValueError("need 0 < max_chars <= hard_max_chars")
        self.max_chars = max_chars
        self.hard_max_chars = hard_max_chars
        self.first_clause_words = first_clause_words  # 0: the first unit is a whole sentence too
        self._buf = ""
        self._scan = 0  # everything before this index is known not to hold a boundary
        self._first = True  # nothing emitted yet in this reply

    @property
    def pending(self) -> str:
        """Text received but not yet emitted."""
        return self._buf

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the sentences it completed (cleaned, never empty)."""
        if not delta:
            return []
        self._buf += delta
        out: list[str] = []
        self._drain(out, final=False)
        return out

    def flush(self) -> list[str]:
        """End of reply: return every remaining sentence and start afresh."""
        return self.finish(cut=False)[0]

    def finish(self, cut: bool) -> tuple[list[str], str]:
        """End of reply: every remaining sentence, and start afresh. A reply `cut` short (at
        the model's token budget) drops its unfinished last sentence, unless it is all there is
        (then it is spoken as it is); returns (sentences, the raw text dropped)."""
        out: list[str] = []
        self._drain(out, final=True)
        tail = self._buf
        if not cut or (self._first and not out) or not tail.strip():
            self._emit(out, tail)
            tail = ""
        self.reset()
        return out, tail

    def reset(self) -> None:
        """Drop pending text (e.g. the reply was interrupted)."""
        self._buf = ""
        self._scan = 0
        self._first = True

    # -- internals -------------------------------------------------------------------

    def _emit(self, out: list[str], text: str) -> None:
        text = clean_for_speech(text)
        if text:
            out.append(text)
            self._first = False

    def _cut(self, out: list[str], at: int, resume: int) -> bool:
        """Emit buf[:at]; keep buf[resume:]. Always True (a cut was made)."""
        self._emit(out, self._buf[:at])
        self._buf = self._buf[resume:]
        self._scan = 0
        return True

    def _drain(self, out: list[str], final: bool) -> None:
        while self._step(out, final):
            pass

    def _step(self, out: list[str], final: bool) -> bool:
        """Find the next cut in the buffer and make it; False when none is decided yet.

        Before any boundary at ``i`` (and at the end of the decided text) the run-on rule
        is checked on ``buf[:i]``; its decision depends only on that prefix, so the output
        is the same however the reply was chunked into deltas.
        """
        buf = self._buf
        n = len(buf)
        i = self._scan
        while i < n:
            ch = buf[i]
            if ch == "\n":
                return self._cut_long(out, i) or self._cut(out, i, i + 1)
            if ch not in _TERMINALS:
                i += 1
                continue
            j = i
            while j < n and buf[j] in _TERMINALS:
                j += 1
            while j < n and buf[j] in _CLOSERS:
                j += 1
            k = j
            while k < n and buf[k] in _SPACES:
                k += 1
            if k >= n and not final:
                self._scan = i  # "3." may become "3.5": wait for the next non-space char
                return self._cut_long(out, i)
            nxt = buf[k] if k < n else ""
            if k == j and nxt not in ("", "\n"):
                i = j  # "3.14", "e.g.", "U.S.": no space after, not a boundary
                continue
            decision = self._decide(buf, i, j, nxt)
            if decision == "before":
                ts = self._token_start(buf, i)
                return self._cut_long(out, i) or self._cut(out, ts, ts)
            if decision == "here":
                return self._cut_long(out, i) or self._cut(out, j, k)
            i = j
        self._scan = n
        return self._cut_long(out, n)

    @staticmethod
    def _token_start(buf: str, i: int) -> int:
        t = i
        while t > 0 and not buf[t - 1].isspace():
            t -= 1
        return t

    def _decide(self, buf: str, i: int, j: int, nxt: str) -> str:
        """'here' (boundary after buf[i:j]), 'before' (boundary before the word ending at i)
        or 'no'. ``nxt`` is the next non-space character, '' at the end of the reply."""
        run = buf[i:j].rstrip("".join(_CLOSERS))
        ts = self._token_start(buf, i)
        token = buf[ts:i].lstrip(_OPENERS)
        if run == "." and token.isdigit() and len(token) <= 3:
            if not buf[:ts].strip(" \t\r\n-*•+"):
                return "no"  # "1." opening a sentence is a list number
            m = _LIST_MARKER.match(buf)
            if m and int(m.group(1)) + 1 == int(token):
                return "before"  # "1. Buy milk 2. Get bread": cut before "2."
        if nxt == "" or nxt == "\n":
            return "here"
        if nxt.islower():
            return "no"
        if run == ".":
            lower = token.lower()
            if lower in _NEVER_END:
                return "no"
            if lower in _BEFORE_NUMBER and nxt.isdigit():
                return "no"
            if len(token) == 1 and token.isupper() and nxt.isupper():
                return "no"  # an initial: "J. R. R. Tolkien", "John F. Kennedy"
            if _DOTTED.fullmatch(token):
                return "no"  # "U.S. Army", "5 p.m. Eastern": merging is the safer mistake
        return "here"

    def _cut_first_clause(self, out: list[str], limit: int) -> bool:
        """The reply's first unit ends at its first clause mark within ``buf[:limit]`` that has
        ``first_clause_words`` words before it; True if cut."""
        for m in _CLAUSE.finditer(self._buf, 0, limit):
            if len(_WORDY_RUN.findall(self._buf, 0, m.start())) >= self.first_clause_words:
                return self._cut(out, m.end(), m.end())
        return False

    def _cut_long(self, out: list[str], limit: int) -> bool:
        """Cut a run-on whose decided text ``buf[:limit]`` is past max_chars; True if cut.

        The cut goes after the latest clause mark ending in [max_chars // 2, max_chars],
        else after the first one ending in (max_chars, hard_max_chars], else (once the text
        is past hard_max_chars) at the last space before hard_max_chars.
        """
        if self._first and self.first_clause_words and self._cut_first_clause(out, limit):
            return True
        if limit <= self.max_chars:
            return False
        buf = self._buf
        half = self.max_chars // 2
        best = -1
        for m in _CLAUSE.finditer(buf, 0, limit):
            end = m.end()
            if end < half:
                continue
            if end <= self.max_chars:
                best = end
            else:
                if best < 0 and end <= self.hard_max_chars:
                    best = end
                break
        if best < 0 and limit > self.hard_max_chars:
            best = buf.rfind(" ", 0, self.hard_max_chars)
            if best <= 0:
                best = self.hard_max_chars
        if best <= 0:
            return False
        return self._cut(out, best, best)
