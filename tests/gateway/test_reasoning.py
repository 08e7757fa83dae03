"""ThinkSplitter on hand-made streams of text pieces, cut at every possible place."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.outputs import GenerationChunk
from gateway.generation import GenerationRun
from gateway.metrics import GatewayMetrics
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


class ChunkList:
    """A hand-made stream of engine chunks (the shape engine.scheduler.RequestStream yields)."""

    def __init__(self, pieces: list[tuple[int, str]], finish: str):
        self.prompt_tokens = 3
        chunks = [
            GenerationChunk(token_ids=[t], text=x, completion_tokens=i + 1) for i, (t, x) in enumerate(pieces)
        ]
        chunks[-1].finish_reason = finish
        self._chunks = iter(chunks)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    def cancel(self):
        pass


@pytest.mark.parametrize(
    ("pieces", "started", "reasoning_tokens", "expected"),
    [
        # R1 template opened the think: 3 reasoning tokens (the closing tag's included), then 2 of answer.
        ([(1, "Hmm"), (2, ", 42."), (3, "</think>"), (4, "\n\n"), (5, "42")], True, 3, ("Hmm, 42.", "42")),
        # The model opens the think itself; the closing tag arrives split over two tokens.
        (
            [(1, "<think>"), (2, "\nok"), (3, "</th"), (4, "ink>The"), (5, " end")],
            False,
            4,
            ("ok", "The end"),
        ),
        # No think at all.
        ([(1, "Plain"), (2, " answer")], False, 0, ("", "Plain answer")),
    ],
)
def test_generation_run_counts_reasoning_tokens(pieces, started, reasoning_tokens, expected):
    metrics = GatewayMetrics(lambda: None)
    run = GenerationRun(
        ChunkList(pieces, "stop"),
        api="test",
        metrics=metrics,
        split_reasoning=True,
        think_prefix="<think>\n" if started else None,
        started=0.0,
    )
    assert asyncio.run(run.collect()) == expected
    assert run.reasoning_tokens == reasoning_tokens
    usage = run.usage()
    assert usage.completion_tokens == len(pieces)
    assert usage.completion_tokens_details.reasoning_tokens == reasoning_tokens
