"""Separate a streamed completion into thinking and answer, whatever the server does with reasoning."""

from __future__ import annotations

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


class ThinkSplitter:
    """Accumulates completion deltas into `thinking` and `answer`.

    Reasoning arrives in one of three shapes, and all of them end up in the same place:

    - a separate delta field (`reasoning_content` from DeepSeek-style servers, `reasoning`
      from others): `feed(reasoning=...)`;
    - `<think>…</think>` inside the content;
    - content that starts inside the reasoning with no opening tag (R1 chat templates end the
      prompt with `<think>\\n`), so the first thing that marks it is `</think>`.

    Until a tag decides otherwise, content counts as answer; a `</think>` seen before any answer
    has been confirmed moves everything before it into the thinking. Tags split across deltas
    are held back until the next delta tells what they are.
    """

    def __init__(self) -> None:
        self._thinking: list[str] = []
        self._answer: list[str] = []
        # "open": no tag seen yet; "think": inside <think>; "answer": after </think>.
        self._mode = "open"
        self._pending = ""

    @property
    def thinking(self) -> str:
        return "".join(self._thinking).strip()

    @property
    def answer(self) -> str:
        return "".join(self._answer).strip()

    def feed(self, content: str | None = None, reasoning: str | None = None) -> None:
        if reasoning:
            self._thinking.append(reasoning)
        if content:
            self._feed_content(self._pending + content)

    def finish(self) -> None:
        """End of stream: a held-back partial tag was plain text after all."""
        pending, self._pending = self._pending, ""
        self._emit(pending)

    def _feed_content(self, text: str) -> None:
        self._pending = ""
        while text:
            tag = CLOSE_TAG if self._mode == "think" else None
            if self._mode == "open":
                # An opening tag counts only before any answer text; a closing one at any point.
                tag_at = {t: text.find(t) for t in (OPEN_TAG, CLOSE_TAG)}
                found = {t: i for t, i in tag_at.items() if i >= 0}
                if found:
                    tag = min(found, key=found.get)
                    if tag == OPEN_TAG and (self.answer or text[: found[tag]].strip()):
                        # Literal "<think>" in an answer; only a closing tag can still matter.
                        tag = CLOSE_TAG if CLOSE_TAG in found else None
                else:
                    tag = None
                if tag is None:
                    tag_candidates = (OPEN_TAG, CLOSE_TAG) if not self.answer else (CLOSE_TAG,)
                    self._emit_holding_back(text, tag_candidates)
                    return
            if tag is None:  # mode "answer": tags are text from here on
                self._emit(text)
                return
            at = text.find(tag)
            if at < 0:
                self._emit_holding_back(text, (tag,))
                return
            self._emit(text[:at])
            self._switch(tag)
            text = text[at + len(tag) :]

    def _switch(self, tag: str) -> None:
        if tag == OPEN_TAG:
            self._answer.clear()  # only whitespace was there
            self._mode = "think"
            return
        if self._mode == "open":
            # The output began inside the reasoning: what looked like answer was thinking.
            self._thinking.extend(self._answer)
            self._answer.clear()
        self._mode = "answer"

    def _emit(self, text: str) -> None:
        if text:
            (self._thinking if self._mode == "think" else self._answer).append(text)

    def _emit_holding_back(self, text: str, tags: tuple[str, ...]) -> None:
        """Emit `text` except a tail that may be the start of one of `tags`."""
        hold = 0
        for tag in tags:
            for n in range(min(len(tag) - 1, len(text)), 0, -1):
                if text.endswith(tag[:n]):
                    hold = max(hold, n)
                    break
        self._emit(text[: len(text) - hold])
        self._pending = text[len(text) - hold :]
