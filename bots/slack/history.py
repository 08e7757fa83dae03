"""A Slack thread turned into chat messages for the model."""

from __future__ import annotations

import re
from collections.abc import Iterable

from bots.slack.format import answer_of_own_message, unescape

_LINK = re.compile(r"<(https?://[^|>]+)(?:\|([^>]+))?>")
_CHANNEL = re.compile(r"<#[A-Z0-9]+\|([^>]*)>")
_USER = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


def user_text(text: str, bot_user_id: str | None) -> str:
    """A user's Slack text as plain text: the bot's own mention dropped, links spelled out."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text)
    text = _CHANNEL.sub(r"#\1", text)
    text = _USER.sub(r"@\1", text)
    return unescape(text).strip()


def thread_to_messages(
    replies: Iterable[dict],
    current: dict,
    bot_user_id: str | None,
    bot_id: str | None,
    system_prompt: str | None = None,
) -> list[dict[str, str]]:
    """Chat messages for answering `current` (a message event) in its thread.

    Earlier messages of the thread come first: the bot's own as assistant turns with the
    thinking and footers stripped and placeholders left out, everyone else's as user turns.
    Messages after `current` (answers still in progress) are not part of its history.
    """
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    current_ts = float(current["ts"])
    turns: list[tuple[str, str]] = []
    for reply in replies:
        if reply.get("ts") == current["ts"] or float(reply.get("ts", 0)) > current_ts:
            continue
        if reply.get("subtype") in {"channel_join", "channel_leave", "thread_broadcast_deleted"}:
            continue
        own = (bot_id is not None and reply.get("bot_id") == bot_id) or (
            bot_user_id is not None and reply.get("user") == bot_user_id
        )
        if own:
            content = answer_of_own_message(reply.get("text", ""))
            role = "assistant"
        elif reply.get("bot_id"):
            continue  # other bots' chatter is not part of the conversation with this one
        else:
            content = user_text(reply.get("text", ""), bot_user_id)
            role = "user"
        if content:
            turns.append((role, content))
    turns.append(("user", user_text(current.get("text", ""), bot_user_id)))
    for role, content in turns:
        if messages and messages[-1]["role"] == role and role != "system":
            # A long answer spans several Slack messages; consecutive user messages are one turn too.
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    return messages
