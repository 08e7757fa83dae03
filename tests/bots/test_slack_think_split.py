import pytest

from bots.slack.think_split import ThinkSplitter


def split(pieces: list[str], reasoning: list[str] | None = None) -> tuple[str, str]:
    splitter = ThinkSplitter()
    for r in reasoning or []:
        splitter.feed(reasoning=r)
    for p in pieces:
        splitter.feed(content=p)
    splitter.finish()
    return splitter.thinking, splitter.answer


def every_split(text: str):
    """The text cut into three deltas at every pair of positions: tags land across deltas."""
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            yield [text[:i], text[i:j], text[j:]]


@pytest.mark.parametrize(
    ("text", "thinking", "answer"),
    [
        ("<think>\nWeigh options.\n</think>\n\nPick B.", "Weigh options.", "Pick B."),
        # R1 templates end the prompt with "<think>\n": the output opens inside the reasoning.
        ("Weigh options.\n</think>\n\nPick B.", "Weigh options.", "Pick B."),
        ("Just an answer.", "", "Just an answer."),
        ("<think></think>Answer only.", "", "Answer only."),
        # Tags are only tags where they can be: an answer that talks about them keeps them.
        ("<think>a</think>Use <think> and </think> tags.", "a", "Use <think> and </think> tags."),
        ("Say <think> please", "", "Say <think> please"),
        ("ends with a partial tag </thi", "", "ends with a partial tag </thi"),
        ("<think>cut off while thinking", "cut off while thinking", ""),
    ],
)
def test_content_with_tags_splits_the_same_however_it_is_cut(text, thinking, answer):
    for pieces in every_split(text):
        assert split(pieces) == (thinking, answer), pieces


def test_reasoning_field_goes_to_thinking_and_content_to_answer():
    splitter = ThinkSplitter()
    for r in ["Let me ", "think."]:
        splitter.feed(reasoning=r)
    assert (splitter.thinking, splitter.answer) == ("Let me think.", "")
    splitter.feed(content="Done.")
    splitter.finish()
    assert (splitter.thinking, splitter.answer) == ("Let me think.", "Done.")


def test_text_is_reclassified_as_thinking_when_a_closing_tag_arrives():
    splitter = ThinkSplitter()
    splitter.feed(content="Hmm, the user wants")
    assert (splitter.thinking, splitter.answer) == ("", "Hmm, the user wants")  # provisional
    splitter.feed(content=" a poem.</think>Roses")
    assert (splitter.thinking, splitter.answer) == ("Hmm, the user wants a poem.", "Roses")


def test_partial_tag_is_held_back_until_the_next_delta():
    splitter = ThinkSplitter()
    splitter.feed(content="<think>x</thi")
    assert splitter.thinking == "x" and "</thi" not in splitter.thinking
    splitter.feed(content="nk>y")
    assert (splitter.thinking, splitter.answer) == ("x", "y")
