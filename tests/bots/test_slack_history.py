from bots.slack import format as layout
from bots.slack.history import thread_to_messages, user_text


def test_user_text_drops_the_bot_mention_and_spells_out_links():
    text = "<@UBOT> see <https://example.com/a?b=1&amp;c=2|the doc> and <#C1|general>, cc <@U2>: 1 &lt; 2"
    assert (
        user_text(text, "UBOT") == "see the doc (https://example.com/a?b=1&c=2) and #general, cc @U2: 1 < 2"
    )


def test_thread_history_roles_and_stripping():
    answer = layout.render_final("why", "Part one", [])[0]
    replies = [
        {"ts": "1.0", "user": "U1", "text": "<@UBOT> question"},
        {"ts": "2.0", "user": "UBOT", "bot_id": "BBOT", "text": answer},
        {
            "ts": "3.0",
            "user": "UBOT",
            "bot_id": "BBOT",
            "text": "Part two\n\n_5 tokens · 1.0 tok/s · 5.0 s · m_",
        },
        {"ts": "4.0", "bot_id": "BOTHER", "text": "another bot's message"},
        {"ts": "5.0", "user": "U1", "subtype": "channel_join", "text": "joined"},
        {"ts": "6.0", "user": "U1", "text": "<@UBOT> follow-up"},
        {"ts": "7.0", "user": "UBOT", "bot_id": "BBOT", "text": layout.placeholder("m")},
    ]
    messages = thread_to_messages(replies, replies[5], "UBOT", "BBOT", system_prompt="Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": "Part one\n\nPart two"},
        {"role": "user", "content": "follow-up"},
    ]
