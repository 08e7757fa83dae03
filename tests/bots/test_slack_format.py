import re

from bots.slack import format as layout


def stats(tokens=120, exact=True):
    return layout.Stats(
        completion_tokens=tokens, exact=exact, tokens_per_second=12.345, seconds=20.0, model="m"
    )


def test_final_layout_thinking_quoted_above_answer_and_footer_last():
    [message] = layout.render_final("I should add.\n\nYes.", "**2**", [layout.footer(stats())])
    assert message.split("\n") == [
        layout.THINKING_HEADER,
        ">I should add.",
        ">",
        ">Yes.",
        "",
        "*2*",
        "",
        "_120 tokens · 12.3 tok/s · 20.0 s · m_",
    ]


def test_no_thinking_no_section_and_estimated_tokens_are_marked():
    [message] = layout.render_final("", "Hi.", [layout.footer(stats(7, exact=False))])
    assert message == "Hi.\n\n_≈7 tokens · 12.3 tok/s · 20.0 s · m_"


def test_slack_control_characters_are_escaped_but_quotes_stay_quotes():
    [message] = layout.render_final("a<b", "x < y && y > z\n> quoted", [])
    assert ">a&lt;b" in message
    assert "x &lt; y &amp;&amp; y &gt; z\n> quoted" in message


def test_huge_thinking_is_trimmed_keeping_start_and_end():
    thinking = "START " + "middle " * 3000 + "END"
    [message] = layout.render_final(thinking, "ok", [])
    assert len(message) <= layout.MESSAGE_LIMIT
    assert ">START" in message and message.split("\n\nok")[0].endswith("END")
    assert re.search(r"\[… [\d,]+ characters of thinking not shown …\]", message)


def test_live_view_stays_within_one_message_and_closes_an_open_code_block():
    text = layout.render_live("t " * 5000, "intro\n```\n" + "code line\n" * 1000, "status")
    assert len(text) <= layout.MESSAGE_LIMIT
    assert text.count("```") % 2 == 0
    assert text.endswith("status")


def test_split_never_cuts_a_code_block_that_fits_in_a_message():
    code = "```\n" + "\n".join(f"x{i} = {i}" for i in range(300)) + "\n```"  # ~2.5k characters
    text = "\n\n".join(["para " * 300, code, "para " * 300, code])
    pieces = layout.split_mrkdwn(text, 3000, 3900)
    assert all(len(p) <= 3900 for p in pieces) and len(pieces[0]) <= 3000
    assert sum(p.count(code) for p in pieces) == 2
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")


def test_a_code_block_larger_than_a_message_is_closed_and_reopened():
    code = "```\n" + "\n".join(f"line {i}" for i in range(1500)) + "\n```"
    pieces = layout.split_mrkdwn(code, 3900, 3900)
    assert len(pieces) >= 3
    for p in pieces:
        assert len(p) <= 3900 and p.startswith("```\n") and p.endswith("\n```")
    lines = [line for p in pieces for line in p.split("\n") if line != "```"]
    assert lines == [f"line {i}" for i in range(1500)]


def test_a_line_longer_than_a_message_is_cut_at_spaces():
    text = "word " * 2000
    pieces = layout.split_mrkdwn(text.strip(), 3900, 3900)
    assert all(len(p) <= 3900 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_long_final_reply_puts_thinking_first_and_footer_last():
    messages = layout.render_final("thought", "\n\n".join(["para " * 200] * 10), [layout.footer(stats())])
    assert len(messages) > 1
    assert messages[0].startswith(layout.THINKING_HEADER)
    assert all(not m.startswith(layout.THINKING_HEADER) for m in messages[1:])
    assert messages[-1].endswith("m_") and all("tok/s" not in m for m in messages[:-1])
    assert all(len(m) <= layout.MESSAGE_LIMIT for m in messages)


def test_own_messages_read_back_as_the_answer_only():
    [message] = layout.render_final("secret reasoning", "The **answer** & more", [layout.footer(stats())])
    # Slack returns message text with > escaped.
    as_returned = message.replace(">", "&gt;")
    assert layout.answer_of_own_message(as_returned) == "The *answer* & more"
    incomplete = layout.render_final(
        "", "Partial", [layout.error_note("The answer is incomplete."), "_1 tokens · 1.0 tok/s · 1.0 s · m_"]
    )
    assert layout.answer_of_own_message(incomplete[0]) == "Partial"
    for status in (layout.placeholder("m"), layout.queued_note("m", 2, 1), layout.error_note("down")):
        assert layout.answer_of_own_message(status) is None
    live = layout.render_live("thinking", "so far", f"{layout.WORKING} _writing…_")
    assert layout.answer_of_own_message(live) == "so far"
