"""Sentence splitting of streamed LLM text: what TTS gets, and when it gets it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.sentences import SentenceSplitter, clean_for_speech


def split(text: str, step: int = 3, first_clause_words: int = 0) -> list[str]:
    """Stream ``text`` in ``step``-character deltas, then flush (the sentence rules alone unless
    ``first_clause_words`` is given)."""
    splitter = SentenceSplitter(first_clause_words=first_clause_words)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i : i + step])
    return out + splitter.flush()


@pytest.mark.parametrize("step", [1, 3, 1000])
@pytest.mark.parametrize(
    "text,expected",
    [
        ("Hello there. How are you? I am fine!", ["Hello there.", "How are you?", "I am fine!"]),
        # abbreviations do not end a sentence
        (
            "Mr. Smith met Dr. Jones on St. Mark's Place. They talked.",
            ["Mr. Smith met Dr. Jones on St. Mark's Place.", "They talked."],
        ),
        (
            "Bring fruit, e.g. apples, i.e. something sweet, pears etc. and more. Then go.",
            ["Bring fruit, e.g. apples, i.e. something sweet, pears etc. and more.", "Then go."],
        ),
        (
            "It was cats vs. Dogs all day. The U.S. Army came. Fine.",
            ["It was cats vs. Dogs all day.", "The U.S. Army came.", "Fine."],
        ),
        ("Pack tents, stoves, etc. Then leave.", ["Pack tents, stoves, etc.", "Then leave."]),
        ("He moved to the U.S. in 2010. It was cold.", ["He moved to the U.S. in 2010.", "It was cold."]),
        ("I read J. R. R. Tolkien. Great books.", ["I read J. R. R. Tolkien.", "Great books."]),
        ("See No. 5 on the list. No. I disagree.", ["See No. 5 on the list.", "No.", "I disagree."]),
        # decimals and versions
        (
            "Pi is about 3.14 today. Python 3.12 and v1.2.3 are out. Done.",
            ["Pi is about 3.14 today.", "Python 3.12 and v1.2.3 are out.", "Done."],
        ),
        ("The answer is 42. Really.", ["The answer is 42.", "Really."]),
        # numbered lists, inline and one per line
        ("1. Buy milk 2. Get bread 3. Call mom", ["1. Buy milk", "2. Get bread", "3. Call mom"]),
        ("Steps:\n1. Open the door.\n2. Walk in.\n", ["Steps:", "1. Open the door.", "2. Walk in."]),
        # ellipses
        ("I was thinking... maybe not. Wait... What?", ["I was thinking... maybe not.", "Wait...", "What?"]),
        ("Hmm… Let me think.", ["Hmm…", "Let me think."]),
        # question and exclamation marks, also in runs
        ("Really?! Yes! Are you sure?? Quite.", ["Really?!", "Yes!", "Are you sure??", "Quite."]),
        # closing quotes and brackets stay with their sentence
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        (
            "(See the manual.) It helps. [Really!] Okay.",
            ["(See the manual.)", "It helps.", "[Really!]", "Okay."],
        ),
        ("\u201cIs it late?\u201d She nodded.", ["\u201cIs it late?\u201d", "She nodded."]),
        ('"Hi." she said.', ['"Hi." she said.']),
        # newlines and bullets
        (
            "Shopping list:\n- eggs\n- milk\n* bread\n\nThat's all",
            ["Shopping list:", "eggs", "milk", "bread", "That's all"],
        ),
        ("First line\nSecond line", ["First line", "Second line"]),
        # markdown emphasis and headings are not read aloud
        (
            "## Summary\n**Note:** this is *important*. __Really__ `x` works.",
            ["Summary", "Note: this is important.", "Really x works."],
        ),
        ("**Bold sentence.** Next one.", ["Bold sentence.", "Next one."]),
    ],
)
def test_sentences(text, expected, step):
    assert split(text, step) == expected


def test_a_sentence_is_released_as_soon_as_the_next_word_starts():
    splitter = SentenceSplitter()
    assert splitter.feed("The weather is nice") == []
    assert splitter.feed(" today.") == []  # "today." could still be "today.com"
    assert splitter.feed(" ") == []  # still unsure: is the next word lower case?
    assert splitter.feed("I") == ["The weather is nice today."]
    assert splitter.feed(" think so") == []
    assert splitter.flush() == ["I think so"]


def test_a_number_then_a_period_waits_for_the_next_character():
    splitter = SentenceSplitter()
    assert splitter.feed("It costs 3.") == []
    assert splitter.feed("5 dollars.") == []
    assert splitter.feed(" OK") == ["It costs 3.5 dollars."]
    splitter = SentenceSplitter()
    assert splitter.feed("I have 3.") == []
    assert splitter.feed(" Then") == ["I have 3."]


def test_a_newline_releases_the_line_at_once():
    splitter = SentenceSplitter()
    assert splitter.feed("Here is the plan:\n") == ["Here is the plan:"]
    assert splitter.feed("- first thing\n- sec") == ["first thing"]
    assert splitter.flush() == ["sec"]


def test_flush_returns_the_remainder_and_starts_afresh():
    splitter = SentenceSplitter()
    assert splitter.feed("Almost done. And the last bit") == ["Almost done."]
    assert splitter.flush() == ["And the last bit"]
    assert splitter.flush() == []
    assert splitter.feed("New reply. ") == []
    assert splitter.flush() == ["New reply."]


def test_reset_drops_pending_text():
    splitter = SentenceSplitter()
    splitter.feed("Half a sent")
    splitter.reset()
    assert splitter.pending == ""
    assert splitter.flush() == []


def test_a_long_run_on_is_cut_at_a_clause_boundary():
    clause = "and then we walked a little further down the road, "
    text = clause * 10
    out = split(text, step=4)
    assert len(out) >= 3
    for piece in out[:-1]:
        assert piece.endswith(","), piece
        assert 100 <= len(piece) <= 200
    assert " ".join(out).split() == text.split()


def test_a_run_on_without_commas_is_still_cut():
    text = "word " * 200  # 1000 characters, no punctuation at all
    out = split(text, step=7)
    assert len(out) >= 4
    assert all(len(piece) <= 300 for piece in out)
    assert " ".join(out).split() == text.split()


def test_a_clause_mark_past_the_limit_is_used_when_none_came_before():
    text = "x" * 60 + " " + "word " * 40 + "then a comma, and more words to finish the thought. Next."
    out = split(text)
    assert out[0].endswith("then a comma,")
    assert out[-1] == "Next."


def test_run_on_output_arrives_before_the_reply_ends():
    splitter = SentenceSplitter()
    out: list[str] = []
    for _ in range(40):
        out += splitter.feed("blah blah, ")
    assert out, "TTS must not wait for the end of a reply that never closes a sentence"


@pytest.mark.parametrize("text", ["", "   ", "\n\n\n", "- \n* \n", "**  **", "...", " \n - ", "---\n***"])
def test_nothing_is_emitted_for_empty_or_punctuation_only_text(text):
    assert split(text) == []
    assert split(text, step=1) == []


def test_clean_for_speech():
    assert clean_for_speech("  - **Hello**   world  ") == "Hello world"
    assert clean_for_speech("* _x_ stays, __y__ goes") == "_x_ stays, y goes"
    assert clean_for_speech("### ") == ""
    assert clean_for_speech("2 * 3 = 6") == "2 * 3 = 6"


_alphabet = st.sampled_from(list("abcXYZ19 .,!?;\n") + [" Mr. ", " e.g. ", "3.5", " 2. ", "...", '"', ")"])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_alphabet, max_size=120), cuts=st.lists(st.integers(1, 9), min_size=1, max_size=30))
def test_chunking_never_changes_the_sentences_and_no_words_are_lost(parts, cuts):
    text = "".join(parts)
    whole = SentenceSplitter()
    expected = whole.feed(text) + whole.flush()

    streamed = SentenceSplitter()
    got: list[str] = []
    i, k = 0, 0
    while i < len(text):
        step = cuts[k % len(cuts)]
        got += streamed.feed(text[i : i + step])
        i, k = i + step, k + 1
    got += streamed.flush()

    assert got == expected
    assert all(s and s == s.strip() and re.search(r"\w", s) for s in got)
    assert re.findall(r"\w+", " ".join(got)) == re.findall(r"\w+", text)


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(
        st.sampled_from(["alpha", "beta,", "gamma;", "delta", "epsilon"]), min_size=50, max_size=300
    )
)
def test_no_piece_is_ever_much_longer_than_the_hard_limit(words):
    out = split(" ".join(words), step=5)
    assert all(len(piece) <= 300 for piece in out)


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_the_first_unit_of_a_reply_ends_at_a_comma_after_a_few_words(step):
    text = "Well, the sky looks blue to us, because air scatters blue light. It is red at sunset, too."
    assert split(text, step, first_clause_words=4) == [
        "Well, the sky looks blue to us,",  # "Well," has too few words before it
        "because air scatters blue light.",
        "It is red at sunset, too.",  # later units are whole sentences
    ]


def test_a_short_first_sentence_is_not_cut_and_numbers_keep_their_commas():
    assert split("Sure, I can. It costs 3,000 dollars, more or less.", 2, first_clause_words=4) == [
        "Sure, I can.",
        "It costs 3,000 dollars, more or less.",
    ]
    assert split("It costs about 3,000 dollars, more or less.", 2, first_clause_words=4) == [
        "It costs about 3,000 dollars,",
        "more or less.",
    ]


def test_the_first_clause_waits_for_the_space_after_its_comma():
    splitter = SentenceSplitter()  # the default both the LLM worker and the orchestrator use
    assert splitter.feed("The sky is blue,") == []  # ",5" may follow ("1,5")
    assert splitter.feed(" because") == ["The sky is blue,"]
    assert splitter.feed(" of light. And") == ["because of light."]
    assert splitter.flush() == ["And"]
    assert splitter.feed("A new reply starts here, again.") == ["A new reply starts here,"]  # afresh
    assert splitter.flush() == ["again."]


def test_a_reply_cut_at_the_token_budget_drops_its_unfinished_sentence():
    s = SentenceSplitter()
    assert s.feed("The sky is blue on a clear day. Sunlight is scattered by the") == [
        "The sky is blue on a clear day."
    ]
    assert s.finish(cut=True) == ([], "Sunlight is scattered by the")
    # all there is: spoken as it is
    s.feed("Sunlight is scattered by the")
    assert s.finish(cut=True) == (["Sunlight is scattered by the"], "")
    # not cut: the remainder is a sentence
    assert s.feed("One. Two") == ["One."]
    assert s.finish(cut=False) == (["Two"], "")
