"""Partial transcripts through the whole stack (real Redis, real Silero VAD, the STT worker's
two lanes, a stub model that takes a second a decode like the CPU profile's Whisper): while the
user speaks a long question the client sees partial guesses, then one final transcript with
all of it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.client import Client
from tests.support.speech import have_espeak, silence, speak
from tests.support.stack import running_stack

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng and sox make the speech")

QUESTION = (
    "tell me everything you know about the long and rather complicated history of the old stone "
    "lighthouse that stands near the harbour in the little fishing town"
)
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_WORDS = {w: i for i, w in enumerate(_NUMBERS)}


def spoken_seconds(text: str) -> float:
    """The stub STT's "I spoke for two point three seconds." -> 2.3 (several, for chunks: summed)."""
    total = 0.0
    for part in text.lower().rstrip(".").split("i spoke for")[1:]:
        words = part.replace(".", "").split()
        total += _WORDS[words[0]] + _WORDS[words[2]] / 10
    return total


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("partials"), profile="stub", stub_stt_delay=1.0) as s:
        yield s


async def test_a_long_question_shows_partials_then_one_final_transcript_with_all_of_it(stack):
    speech = speak(QUESTION, wpm=140)
    assert len(speech) / 16000 > 5.5  # longer than one partial chunk
    c = await Client.open(stack.url)
    await c.start()
    await c.wait_for("state", state="LISTENING")
    await c.stream(np.concatenate([speech, silence(2.5)]))
    final = await c.wait_for("transcript", final=True, timeout=30)
    partials = [e for e in c.of("transcript", final=False) if e["_t"] < final["_t"]]
    assert partials, "partial guesses while the question was spoken"
    assert all(e["turn"] == final["turn"] for e in partials)
    assert spoken_seconds(final["text"]) >= 0.8 * (len(speech) / 16000)  # every word, in one final
    assert len(c.of("transcript", final=True)) == 1
    await c.close()
