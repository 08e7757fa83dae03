"""Split an R1-style generation into reasoning and answer, piece by piece.

DeepSeek-R1 and its kin write `<think>reasoning</think>answer`. DeepSeek's API
and llama-server's `--reasoning-format deepseek` return the reasoning as
`reasoning_content` and only the answer as `content`; `ThinkSplitter` does the
same on a stream of text pieces. The tags may arrive split over several pieces
(`<th` + `ink>`), the prompt may already have opened the think (R1's template
ends with `<think>\\n`, so the output starts inside the reasoning with no opening
tag), and the output may stop inside the think (max_tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from engine.tool_calls import ToolCall

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

ReasoningFormat = Literal["deepseek", "none"]


@dataclass(slots=True)
class SplitDelta:
    """What one piece of output added to each channel."""

    reasoning: str = ""
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()  # calls that became complete (engine/tool_calls.py)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)


def prompt_opens_think(prompt_text: str) -> bool:
    """True when the rendered prompt ends inside an open think (R1's template, force_think)."""
    stripped = prompt_text.rstrip()
    return stripped.endswith(THINK_OPEN)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkSplitter:
    """Feed generated text with `feed`, then call `finish` once at the end.

    States: "start" (the opening tag may still come, after optional leading
    whitespace), "think" (inside the reasoning), "answer" (after the reasoning,
    or when the output did not start with a think). Text that might be the
    beginning of a tag is held back until the next piece decides it. As
    llama-server does, whitespace right after `<think>` and right after
    `</think>` is dropped.
    """

    def __init__(self, *, started_in_think: bool = False):
        self._state: Literal["start", "think", "answer"] = "think" if started_in_think else "start"
        self._held = ""  # text held back: a possible partial tag, or leading whitespace
        self._strip_leading = started_in_think  # drop whitespace at the start of the current channel

    @property
    def in_think(self) -> bool:
        """True while the text being generated is reasoning."""
        return self._state == "think"

    def feed(self, text: str) -> SplitDelta:
        out = SplitDelta()
        buf = self._held + text
        self._held = ""
        while buf:
            if self._state == "start":
                lead = buf.lstrip()
                if not lead:  # only whitespace so far: cannot tell yet
                    self._held = buf
                    break
                if lead.startswith(THINK_OPEN):
                    self._state = "think"
                    self._strip_leading = True
                    buf = lead[len(THINK_OPEN) :]
                    continue
                if THINK_OPEN.startswith(lead):  # "<thi": wait for more
                    self._held = buf
                    break
                self._state = "answer"
                self._strip_leading = False
                continue
            if self._strip_leading:
                buf = buf.lstrip()
                if not buf:
                    break
                self._strip_leading = False
            if self._state == "think":
                end = buf.find(THINK_CLOSE)
                if end >= 0:
                    out.reasoning += buf[:end]
                    buf = buf[end + len(THINK_CLOSE) :]
                    self._state = "answer"
                    self._strip_leading = True
                    continue
                keep = _partial_suffix(buf, THINK_CLOSE)
                out.reasoning += buf[: len(buf) - keep]
                self._held = buf[len(buf) - keep :]
                break
            out.content += buf
            break
        return out

    def finish(self) -> SplitDelta:
        """Flush what was held back: the output ended (stop, max_tokens, cancel)."""
        held, self._held = self._held, ""
        if not held:
            return SplitDelta()
        if self._state == "think":
            return SplitDelta(reasoning=held)
        if self._state == "start":
            # A lone "<thi" or whitespace at the very end: it was never a tag.
            return SplitDelta(content=held if held.strip() else "")
        return SplitDelta(content=held)
