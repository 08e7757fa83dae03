"""Slack mrkdwn layout of a reply: quoted thinking, answer, footer; and reading it back."""

from __future__ import annotations

import re
from dataclasses import dataclass

from md2mrkdwn import convert as markdown_to_mrkdwn

# Slack accepts up to 40,000 characters but folds long messages and its docs advise staying
# under 4,000; each reply message is kept below that.
MESSAGE_LIMIT = 3900
# Thinking shown while the model is still thinking (the tail, the newest part).
THINKING_LIVE_CHARS = 2500
# Thinking kept above an answer that is being written, and in the final message.
THINKING_BESIDE_ANSWER_CHARS = 600
THINKING_FINAL_CHARS = 1500

THINKING_HEADER = ">:thought_balloon: _Thinking_"
WORKING = ":hourglass_flowing_sand:"
QUEUED = ":inbox_tray:"
WARNING = ":warning:"
HINT = ":information_source:"
STATUS_PREFIXES = (WORKING, QUEUED, WARNING, HINT)
FENCE = "```"
_FOOTER = re.compile(r"^_≈?\d+ tokens · .* s(?: · .*)?_$")


@dataclass(frozen=True)
class Stats:
    """Figures for the footer of a finished reply."""

    completion_tokens: int
    exact: bool  # False when the server sent no usage and the tokens were counted from deltas
    tokens_per_second: float
    seconds: float
    model: str


def placeholder(model: str) -> str:
    return f"{WORKING} _thinking… ({model})_"


def queued_note(model: str, slots: int, waiting: int) -> str:
    before = f"{waiting} request{'s' if waiting != 1 else ''} waiting before this one"
    return (
        f"{QUEUED} _queued ({model}): all {slots} generation slot{'s' if slots != 1 else ''} busy, {before}_"
    )


def hint(message: str) -> str:
    return f"{HINT} {escape(message)}"


def error_note(message: str) -> str:
    return f"{WARNING} {escape(message)}"


def footer(stats: Stats) -> str:
    tokens = f"{'' if stats.exact else '≈'}{stats.completion_tokens} tokens"
    return f"_{tokens} · {stats.tokens_per_second:.1f} tok/s · {stats.seconds:.1f} s · {stats.model}_"


def escape(text: str) -> str:
    """Escape the three characters Slack treats as control sequences.

    A `>` that starts a line is left alone so Markdown quotes stay quotes.
    """
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return re.sub(r"(?<!^)(?<!\n)>", "&gt;", text)


def answer_to_mrkdwn(answer: str) -> str:
    """Markdown from the model → Slack mrkdwn; an unclosed code fence (mid-stream) is closed."""
    if _count_fences(answer) % 2:
        answer += "\n" + FENCE
    text = markdown_to_mrkdwn(escape(answer))
    # Slack has no syntax highlighting: "```python" would show "python" as code.
    return re.sub(r"^(\s*)```[\w+#.-]+[ \t]*$", r"\1```", text, flags=re.MULTILINE)


def thinking_section(thinking: str, limit: int, keep_head: bool) -> str:
    """Thinking as a Slack quote, at most about `limit` characters of it.

    While streaming the newest part matters (keep_head=False: the tail); in the final message
    the start and the end (keep_head=True).
    """
    if not thinking:
        return ""
    if len(thinking) > limit:
        omitted = f"[… {len(thinking) - limit:,} characters of thinking not shown …]"
        if keep_head:
            head = _cut_at_space(thinking[: limit // 3], from_end=True)
            tail = _cut_at_space(thinking[-(limit - len(head)) :], from_end=False)
            thinking = f"{head}\n{omitted}\n{tail}"
        else:
            thinking = f"{omitted}\n" + _cut_at_space(thinking[-limit:], from_end=False)
    lines = escape(thinking).split("\n")
    return "\n".join([THINKING_HEADER, *(">" + line for line in lines)])


def render_live(thinking: str, answer: str, status: str) -> str:
    """One message showing a reply in progress, always within MESSAGE_LIMIT."""
    thinking_limit = THINKING_BESIDE_ANSWER_CHARS if answer else THINKING_LIVE_CHARS
    parts = [thinking_section(thinking, thinking_limit, keep_head=False)]
    if answer:
        room = MESSAGE_LIMIT - len(parts[0]) - len(status) - 20
        shown = answer_to_mrkdwn(answer)
        if len(shown) > room:
            shown = "…" + _cut_at_space(shown[-room:], from_end=False)
            if _count_fences(shown) % 2:  # the cut fell inside a code block
                shown = FENCE + "\n" + shown
        parts.append(shown)
    parts.append(status)
    return "\n\n".join(p for p in parts if p)


def render_final(thinking: str, answer: str, closing: list[str]) -> list[str]:
    """The finished reply as one or more messages, each within MESSAGE_LIMIT.

    The first message holds the (trimmed) thinking; `closing` lines (footer, warnings) end the
    last message. Code blocks are never split across messages unless one alone exceeds a
    message, and then each piece is closed and reopened so it still reads as code.
    """
    head = thinking_section(thinking, THINKING_FINAL_CHARS, keep_head=True)
    tail = "\n".join(closing)
    body = answer_to_mrkdwn(answer) if answer else ""
    if not body and not head:
        body = "_(the model returned an empty answer)_"
    first_room = MESSAGE_LIMIT - (len(head) + 2 if head else 0)
    pieces = split_mrkdwn(body, first_room, MESSAGE_LIMIT) if body else [""]
    if len(pieces[-1]) + len(tail) + 2 > MESSAGE_LIMIT:
        pieces.append("")
    messages = []
    for i, piece in enumerate(pieces):
        parts = [head if i == 0 else "", piece, tail if i == len(pieces) - 1 else ""]
        messages.append("\n\n".join(p for p in parts if p))
    return messages


def split_mrkdwn(text: str, first_limit: int, limit: int) -> list[str]:
    """Split text into pieces of at most first_limit, then limit, characters.

    Cuts go between paragraphs and never inside a code block when the block fits in a piece.
    """
    pieces: list[str] = []
    current = ""
    for block in _blocks(text):
        room = first_limit if not pieces else limit
        joined = f"{current}\n{block}" if current else block
        if len(joined) <= room:
            current = joined
            continue
        if current:
            pieces.append(current.strip("\n"))
            current = ""
            room = limit
        if len(block) <= room:
            current = block
            continue
        for chunk in _split_block(block, room, limit):
            pieces.append(chunk)
            room = limit
    if current.strip() or not pieces:
        pieces.append(current.strip("\n"))
    return pieces


def answer_of_own_message(text: str) -> str | None:
    """What the bot said in one of its own earlier messages, for the chat history.

    Drops the thinking quote, the footer and warnings; placeholders and other status
    messages give None.
    """
    lines = text.replace("&gt;", ">").strip().split("\n")
    if lines and lines[0].startswith(STATUS_PREFIXES):
        return None
    if lines and lines[0] == THINKING_HEADER:
        while lines and lines[0].startswith(">"):
            lines.pop(0)
    while lines and (
        not lines[-1].strip() or _FOOTER.match(lines[-1]) or lines[-1].startswith(STATUS_PREFIXES)
    ):
        lines.pop()
    return unescape("\n".join(lines).strip()) or None


def unescape(text: str) -> str:
    """Slack's escaping undone (only &, < and > are escaped)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _blocks(text: str) -> list[str]:
    """Paragraphs (a blank line ends one) and whole fenced code blocks."""
    blocks: list[str] = []
    current: list[str] = []
    in_code = False
    for line in text.split("\n"):
        fence = _count_fences(line) % 2 == 1
        if not in_code and fence:
            if current:
                blocks.append("\n".join(current))
            current = [line]
            in_code = True
        elif in_code:
            current.append(line)
            if fence:
                blocks.append("\n".join(current))
                current = []
                in_code = False
        else:
            current.append(line)
            if not line.strip():
                blocks.append("\n".join(current))
                current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def _split_block(block: str, first_limit: int, limit: int) -> list[str]:
    """Split one block that is larger than a message: lines, then words, then characters."""
    is_code = block.startswith(FENCE) and block.rstrip().endswith(FENCE)
    lines = block.split("\n")
    if is_code:
        opening, lines = lines[0], lines[1:-1]
        first_limit -= len(opening) + len(FENCE) + 2
        limit -= len(opening) + len(FENCE) + 2
    chunks: list[str] = []
    current = ""
    for line in lines:
        room = first_limit if not chunks else limit
        joined = f"{current}\n{line}" if current else line
        if len(joined) <= room:
            current = joined
            continue
        if current:
            chunks.append(current)
            room = limit
        while len(line) > room:
            cut = line.rfind(" ", 0, room)
            cut = cut if cut > room // 2 else room
            chunks.append(line[:cut])
            line = line[cut:].lstrip(" ")
            room = limit
        current = line
    if current:
        chunks.append(current)
    if is_code:
        chunks = [f"{opening}\n{chunk}\n{FENCE}" for chunk in chunks]
    return chunks


def _count_fences(text: str) -> int:
    return text.count(FENCE)


def _cut_at_space(text: str, from_end: bool) -> str:
    """Drop the partial word at the cut edge of a trimmed text."""
    if from_end:
        cut = text.rfind(" ")
        return text[:cut] if cut > len(text) // 2 else text
    cut = text.find(" ")
    return text[cut + 1 :] if 0 <= cut < len(text) // 2 else text
