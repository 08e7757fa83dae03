"""What generation yields, piece by piece, to the CLI and the gateway."""

from __future__ import annotations

from typing import Literal

import msgspec

FinishReason = Literal["stop", "length", "cancelled", "error"]


class Timings(msgspec.Struct, kw_only=True):
    """Per-request speed, in the units llama-server reports."""

    prompt_n: int = 0
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0

    @property
    def prompt_per_second(self) -> float:
        return self.prompt_n / (self.prompt_ms / 1e3) if self.prompt_ms > 0 else 0.0

    @property
    def predicted_per_second(self) -> float:
        return self.predicted_n / (self.predicted_ms / 1e3) if self.predicted_ms > 0 else 0.0


class GenerationChunk(msgspec.Struct, kw_only=True):
    """One step of a generation: new token ids and the text they completed.

    `text` holds only whole UTF-8 characters (a partial character waits for the
    next token) and never includes a matched stop string. The last chunk of a
    request has `finish_reason` set and carries the final timings.
    """

    token_ids: list[int]
    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose keys/values came from the prefix cache
    timings: Timings | None = None
