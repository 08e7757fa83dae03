"""ThinkSplitter on hand-made streams of text pieces, cut at every possible place."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.reasoning import ThinkSplitter, prompt_opens_think


def run(pieces: list[str], *, started_in_think: bool = False) -> tuple[str, str]:
    s = ThinkSplitter(started_in_think=started_in_think)
    reasoning, content = [], []
    for p in pieces:
        d = s.feed(p)
        reasoning.append(d.reasoning)
        content.append(d.content)
    d = s.finish()
    return "".join(reasoning) + d.reasoning, "".join(content) + d.content


def every_split(text: str) -> list[list[str]]:
    """The text cut in two at every position, and cut into single characters."""
    return [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text)]


@pytest.mark.parametrize(
    ("text", "started", "expected"),
    [
        ("<think>\nLet me see.\n</think>\n\nThe answer is 4.", False, ("Let me see.\n", "The answer is 4.")),
        ("Let me see.\n</think>\n\nThe answer is 4.", True, ("Let me see.\n", "The answer is 4.")),
        ("\nLet me see.</think>4", True, ("Let me see.", "4")),
        ("Just an answer.", False, ("", "Just an answer.")),
        ("  \n<think>a</think>b", False, ("a", "b")),
        ("<think>\nstill thinking when max_tokens hit", False, ("still thinking when max_tokens hit", "")),
        ("still thinking when max_tokens hit </thi", True, ("still thinking when max_tokens hit </thi", "")),
        ("<think></think>answer", False, ("", "answer")),
        ("answer mentions <think> later", False, ("", "answer mentions <think> later")),
        ("a</think>b</think>c", True, ("a", "b</think>c")),
        ("x < y and </ not a tag", True, ("x < y and </ not a tag", "")),
        ("<thin", False, ("", "<thin")),
        ("", True, ("", "")),
    ],
)
def test_split_at_every_cut(text, started, expected):
    for pieces in every_split(text):
        assert run(pieces, started_in_think=started) == expected, pieces


def test_deltas_are_streamed_not_held_to_the_end():
    s = ThinkSplitter(started_in_think=True)
    assert s.feed("I think").reasoning == "I think"
    d = s.feed(" so</th")
    assert d.reasoning == " so" and d.content == ""  # "</th" is held: it may be the closing tag
    d = s.feed("ink>\n\nYes")
    assert d.reasoning == "" and d.content == "Yes"
    assert not s.in_think
    assert s.feed(" indeed").content == " indeed"


def test_held_partial_tag_that_is_not_a_tag_is_released():
    s = ThinkSplitter(started_in_think=True)
    assert s.feed("a</t").reasoning == "a"
    assert s.feed("able>").reasoning == "</table>"


@given(st.lists(st.text(alphabet="<>/thinkab \n", max_size=6), max_size=12), st.booleans())
def test_nothing_is_lost_or_duplicated(pieces, started):
    """Whatever the pieces, reasoning + tags + content is the text with only the tags and the
    whitespace the splitter documents as dropped removed; splitting does not depend on the cuts."""
    text = "".join(pieces)
    whole = run([text], started_in_think=started)
    assert run(pieces, started_in_think=started) == whole
    reasoning, content = whole
    assert len(reasoning) + len(content) <= len(text)
    assert reasoning.strip() in text and content.strip() in text


def test_prompt_opens_think():
    assert prompt_opens_think("<｜User｜>hi<｜Assistant｜><think>\n")
    assert prompt_opens_think("...<think>")
    assert not prompt_opens_think("<|im_start|>assistant\n")
    assert not prompt_opens_think("<think>x</think>")
