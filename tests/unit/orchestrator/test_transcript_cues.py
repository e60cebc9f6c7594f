"""Transcript cues: an unfinished thought is seen in its last words, a finished one in its punctuation."""

from __future__ import annotations

import pytest

from services.orchestrator.transcript_cues import transcript_cue


@pytest.mark.parametrize(
    "text",
    [
        "I was wondering",
        "I was wondering.",  # Whisper punctuates fragments: the words win
        "I need to leave early today because",
        "Can you tell me whether",
        "The thing I keep forgetting is that",
        "I went to the store and so",
        "My fellow",
        "My fellow.",
        "Set a timer for",
        "Remind me to call my mother and",
        "Tell me",
        "So, um",
        "What I wanted to ask was,",
        "Let me think...",
        "It depends on the",
        "I think",
        "  and  ",
    ],
)
def test_unfinished_thoughts(text):
    assert transcript_cue(text) == "incomplete"


@pytest.mark.parametrize(
    "text",
    [
        "What time is it?",
        "Turn off the lights.",
        "Tell me a joke.",
        "What is it for?",  # a question may end on a preposition
        "Who said that?",
        "Can you do that!",
        "I think so.",
        "I've seen it before.",
        "I called her.",
        "Whether you could tell me the capital of Spain.",
        "I was wondering whether you could tell me the capital of Spain.",
    ],
)
def test_finished_thoughts(text):
    assert transcript_cue(text) == "complete"


@pytest.mark.parametrize("text", ["", "   ", "turn off the lights", "¿?", "42"])
def test_nothing_to_go_on(text):
    assert transcript_cue(text) == "unknown"


def test_curly_apostrophes_and_case_do_not_matter():
    assert transcript_cue("I’D LIKE") == "incomplete"
    assert transcript_cue("I'd like") == "incomplete"
