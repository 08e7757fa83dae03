"""Token ids to text one token at a time, for streaming.

A token can stand for part of a character: byte-level BPE splits a multi-byte UTF-8 character
over several tokens, and SentencePiece byte fallback emits ``<0xXX>`` tokens one byte each. The
detokenizer keeps the bytes of an unfinished character until the rest arrives, so no delta ever
holds half a character, and the deltas joined equal ``Tokenizer.decode`` of all the ids.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from engine.tokenizer import Tokenizer


class IncrementalDetokenizer:
    """Feed token ids with ``add``; each call returns the text that became complete."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._strip_space = tokenizer.strips_leading_space()
        self._first = True
        # Holds back an incomplete UTF-8 sequence; invalid bytes become U+FFFD exactly as in a
        # one-shot decode of the same bytes.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._deltas: list[str] = []

    @property
    def text(self) -> str:
        """Everything returned so far."""
        if len(self._deltas) > 1:
            self._deltas = ["".join(self._deltas)]
        return self._deltas[0] if self._deltas else ""

    def add(self, token_id: int) -> str:
        """Take one token id; return the newly complete text (possibly "")."""
        if self._skip_special and self._tokenizer.is_special(token_id):
            return ""
        piece = self._tokenizer.token_bytes(token_id)
        if self._first and self._strip_space and piece.startswith(b" "):
            piece = piece[1:]  # same rule as Tokenizer.decode
        self._first = False
        delta = self._utf8.decode(piece)
        if delta:
            self._deltas.append(delta)
        return delta

    def add_many(self, token_ids: Iterable[int]) -> str:
        """Take several ids; return the newly complete text."""
        return "".join(self.add(t) for t in token_ids)

    def flush(self) -> str:
        """End of the stream: bytes still held (an unfinished character) come out as U+FFFD."""
        delta = self._utf8.decode(b"", final=True)
        if delta:
            self._deltas.append(delta)
        return delta
