"""The real slack-bolt app against a local fake Slack (Web API + Socket Mode) and fake model servers."""

from __future__ import annotations

import re

import pytest
from conftest import TEST_UPDATE_INTERVAL
from fake_model_server import MODEL, Script, content_script, reasoning_script, refused_url
from fake_slack import FakeSlack

from bots.slack import format as layout

FOOTER = re.compile(r"^_(≈?)(\d+) tokens · \d+\.\d tok/s · \d+\.\d s · ([\w.-]+)_$")


def final_text(slack: FakeSlack, placeholder_ts: str) -> str:
    """Wait until the reply posted as `placeholder_ts` ends with a footer or a warning; return its text."""

    def finished():
        text = next(m["text"] for msgs in slack.messages.values() for m in msgs if m["ts"] == placeholder_ts)
        last = text.strip().split("\n")[-1]
        return text if FOOTER.match(last) or text.startswith(layout.WARNING) else None

    return slack.wait_for(finished, what="the final reply")


def ask(slack: FakeSlack, text: str, **where) -> tuple[dict, str]:
    """A user asks; returns (event, ts of the bot's placeholder reply)."""
    event = slack.user_says(text, **where)
    envelope_id, _ = slack.send_event(event)
    slack.wait_for(lambda: envelope_id in slack.acks, what="the envelope ack")
    thread_ts = event.get("thread_ts", event["ts"])
    post = slack.wait_for(
        lambda: next((c for c in slack.posts() if c.params.get("thread_ts") == thread_ts), None),
        what="the placeholder",
    )
    return event, post.result["ts"], post


def test_reasoning_content_stream_shows_thinking_apart_from_answer(slack, model_server, start_bot):
    thinking = [f"step {i} of the reasoning. " for i in range(24)]
    answer = ["The answer", " is **42**", ".\n\nDone."]
    model_server.script = reasoning_script(thinking, answer, pause=0.04)
    start_bot(model_server.base_url)

    event, ts, post = ask(slack, "<@U0BOT> what is six times seven?")

    assert post.params["text"] == layout.placeholder(MODEL)
    assert post.params["thread_ts"] == event["ts"]
    text = final_text(slack, ts)
    lines = text.split("\n")
    assert lines[0] == layout.THINKING_HEADER
    quoted = [line for line in lines if line.startswith(">")]
    assert ">step 0 of the reasoning. step 1" in "\n".join(quoted)
    answer_part = "\n".join(line for line in lines if not line.startswith(">"))
    assert "The answer is *42*." in answer_part  # Markdown bold became mrkdwn bold
    assert "step" not in answer_part
    footer = FOOTER.match(lines[-1])
    assert footer and footer.group(1) == "" and int(footer.group(2)) == len(thinking) + len(answer)

    # Live updates went out while streaming, throttled: far fewer than the 27 deltas, and each
    # write to the message at least the update interval after the previous one.
    updates = slack.updates_by_ts[ts]
    assert 2 <= len(updates) < len(thinking) + len(answer)
    writes = [post.at] + [u.at for u in updates]
    gaps = [b - a for a, b in zip(writes, writes[1:], strict=False)]
    assert min(gaps) >= TEST_UPDATE_INTERVAL * 0.8, gaps
    live = [u.params["text"] for u in updates[:-1]]
    assert any(t.startswith(layout.THINKING_HEADER) and layout.WORKING in t for t in live)

    request = model_server.requests[0]
    assert request["stream"] is True and request["model"] == MODEL
    assert request["messages"] == [{"role": "user", "content": "what is six times seven?"}]


def test_think_tags_in_content_split_across_deltas_in_a_direct_message(slack, model_server, start_bot):
    pieces = ["<thi", "nk>\nThe user", " greets me.\n</th", "ink>\n\n", "Hi! ", "How can I help?"]
    model_server.script = content_script(pieces, pause=0.02)
    start_bot(model_server.base_url)

    event, ts, post = ask(slack, "hello", channel="D0ALICE")

    text = final_text(slack, ts)
    assert text.split("\n")[:3] == [layout.THINKING_HEADER, ">The user greets me.", ""]
    assert "Hi! How can I help?" in text
    assert "think>" not in text


def test_no_thinking_gives_no_thinking_section_and_counts_deltas_without_usage(
    slack, model_server, start_bot
):
    model_server.script = content_script(["Paris", " is the capital", " of France."], usage=False)
    start_bot(model_server.base_url)

    _, ts, _ = ask(slack, "<@U0BOT> capital of France?")

    text = final_text(slack, ts)
    assert text.split("\n")[0] == "Paris is the capital of France."
    assert ">" not in text
    footer = FOOTER.match(text.split("\n")[-1])
    assert footer.group(1) == "≈" and footer.group(2) == "3"


def test_thread_history_becomes_chat_messages(slack, model_server, start_bot):
    model_server.script = content_script(["12"])
    start_bot(model_server.base_url, system_prompt="You are terse.")
    first = slack.user_says("<@U0BOT> what is 2+2?")
    earlier_answer = layout.render_final(
        "2 plus 2 is 4.", "It is **4**.", [layout.footer(layout.Stats(9, True, 3.0, 3.0, MODEL))]
    )
    slack.bot_said(earlier_answer[0], first["channel"], first["ts"])
    slack.bot_said(
        layout.placeholder(MODEL), first["channel"], first["ts"]
    )  # a reply cut off before it began
    slack.bot_said(layout.error_note("The model server answered HTTP 500"), first["channel"], first["ts"])
    slack.user_says("(thinking out loud) hmm", thread_ts=first["ts"], user="U0BOB")

    _, ts, _ = ask(slack, "<@U0BOT> and times 3?", thread_ts=first["ts"])
    final_text(slack, ts)

    assert model_server.requests[0]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "what is 2+2?"},
        {"role": "assistant", "content": "It is *4*."},
        {"role": "user", "content": "(thinking out loud) hmm\n\nand times 3?"},
    ]


def test_redelivered_event_is_answered_once(slack, model_server, start_bot):
    model_server.script = content_script(["Once", "."], pause=0.05)
    start_bot(model_server.base_url)
    event = slack.user_says("<@U0BOT> say it once")

    first_envelope, event_id = slack.send_event(event)
    # Slack re-delivers when it thinks the ack was late: same event id, new envelope, retry fields.
    retry_envelope, _ = slack.send_event(event, event_id=event_id, retry_attempt=1, retry_reason="timeout")
    # The same message as a second event (a mention inside a direct message arrives twice).
    third_envelope, _ = slack.send_event(dict(event, type="message", channel_type="channel"))
    slack.wait_for(lambda: {first_envelope, retry_envelope, third_envelope} <= slack.acks, what="all acks")

    post = slack.wait_for(lambda: next(iter(slack.posts()), None))
    final_text(slack, post.result["ts"])
    assert len(slack.posts()) == 1
    assert len(model_server.requests) == 1


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("http500", "The model server answered HTTP 500: CUDA out of memory."),
        ("hang", "sent nothing for 1 s"),
        ("hang_before_headers", "sent nothing for 1 s"),
        ("refused", "Could not reach the model server"),
        ("error_event", "The model server stopped with an error: context length exceeded"),
    ],
)
def test_model_server_failure_is_reported_and_the_bot_keeps_answering(
    slack, model_server, start_bot, behaviour, expected
):
    base = refused_url() if behaviour == "refused" else model_server.base_url
    bot = start_bot(base, model=MODEL, read_timeout=1.0)
    model_server.script = Script(behaviour=behaviour)

    _, ts, _ = ask(slack, "<@U0BOT> are you there?")
    text = final_text(slack, ts)
    assert text.startswith(layout.WARNING) and expected in text, text

    # The bot is still connected and answers the next question once the server is fine.
    bot.api.base_url = model_server.base_url
    bot.api._client.base_url = model_server.base_url
    model_server.script = content_script(["Yes."])
    _, ts, _ = ask(slack, "<@U0BOT> and now?")
    assert final_text(slack, ts).startswith("Yes.")


def test_unreachable_server_without_model_name_is_reported(slack, start_bot):
    start_bot(refused_url())
    _, ts, _ = ask(slack, "<@U0BOT> hello?")
    text = final_text(slack, ts)
    assert text.startswith(layout.WARNING) and "Could not reach the model server" in text


def test_stream_broken_midway_keeps_the_partial_answer(slack, model_server, start_bot):
    script = content_script(["First half", " of the answer", " and the rest"])
    script.behaviour, script.drop_after = "drop", 2
    model_server.script = script
    start_bot(model_server.base_url)

    _, ts, _ = ask(slack, "<@U0BOT> tell me")
    text = final_text(slack, ts)
    lines = text.split("\n")
    assert lines[0] == "First half of the answer"
    assert lines[-2].startswith(layout.WARNING) and "incomplete" in lines[-2]
    assert FOOTER.match(lines[-1])


def test_busy_bot_shows_a_queued_note_then_answers(slack, model_server, start_bot):
    model_server.script = content_script([f"word{i} " for i in range(10)], pause=0.1)
    start_bot(model_server.base_url, concurrency=1)

    _, first_ts, _ = ask(slack, "<@U0BOT> first")
    _, second_ts, second = ask(slack, "<@U0BOT> second")

    assert second.params["text"].startswith(layout.QUEUED)
    assert "all 1 generation slot busy, 0 requests waiting before this one" in second.params["text"]
    assert final_text(slack, first_ts).startswith("word0")
    assert final_text(slack, second_ts).startswith("word0")
    # The note turned into a placeholder when its turn came.
    assert slack.updates_by_ts[second_ts][0].params["text"] == layout.placeholder(MODEL)


def test_long_answer_continues_in_further_messages_without_splitting_code(slack, model_server, start_bot):
    code = "```python\n" + "\n".join(f"print('line {i}')" for i in range(120)) + "\n```"
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 12 for i in range(12)]
    answer = "\n\n".join(paragraphs[:6] + [code] + paragraphs[6:])
    model_server.script = content_script([answer[i : i + 500] for i in range(0, len(answer), 500)])
    start_bot(model_server.base_url)

    event, ts, _ = ask(slack, "<@U0BOT> write a lot")
    slack.wait_for(
        lambda: FOOTER.match(slack.thread(event["channel"], event["ts"])[-1]["text"].split("\n")[-1])
    )
    replies = [m["text"] for m in slack.thread(event["channel"], event["ts"]) if m.get("bot_id")]
    assert len(replies) >= 3
    assert all(len(r) <= layout.MESSAGE_LIMIT for r in replies)
    assert all(r.count("```") % 2 == 0 for r in replies)
    assert sum("print('line 0')" in r and "print('line 119')" in r for r in replies) == 1
    joined = "\n".join(replies)
    assert all(f"Paragraph {i}:" in joined for i in range(12))
    assert replies[0] == next(m["text"] for m in slack.messages[event["channel"]] if m["ts"] == ts)


def test_slack_refusing_the_thread_history_is_reported_in_the_thread(slack, model_server, start_bot):
    start_bot(model_server.base_url)
    first = slack.user_says("<@U0BOT> hi")
    slack.refuse["conversations.replies"] = "missing_scope"
    _, ts, _ = ask(slack, "<@U0BOT> and now?", thread_ts=first["ts"])
    text = final_text(slack, ts)
    assert text.startswith(layout.WARNING) and "missing_scope" in text and "bots/manifest.yaml" in text
    assert model_server.requests == []


def test_an_empty_mention_gets_a_hint_and_no_generation(slack, model_server, start_bot):
    start_bot(model_server.base_url)
    event = slack.user_says("<@U0BOT>")
    slack.send_event(event)
    post = slack.wait_for(lambda: next(iter(slack.posts()), None))
    assert post.params["text"].startswith(layout.HINT)
    assert model_server.requests == []


def test_placeholder_shows_the_time_waited_until_the_first_token(slack, model_server, start_bot):
    model_server.script = Script(behaviour="hang")
    start_bot(model_server.base_url, read_timeout=3.5)
    _, ts, _ = ask(slack, "<@U0BOT> long prompt")
    text = final_text(slack, ts)
    assert "sent nothing for 3.5 s" in text
    waits = [
        u.params["text"] for u in slack.updates_by_ts[ts] if "reading the conversation" in u.params["text"]
    ]
    assert waits and all(w.startswith(layout.WORKING) for w in waits)
