"""One generation request's state: its tokens, sampling, KV cache blocks, detokenizer and stops.

A Sequence runs no model: the scheduler (engine/scheduler.py) picks which sequences take part in
a step and how many of their tokens, the model runner (engine/model_runner.py) runs one forward
for all of them and samples, and `append_token` turns each new token into a GenerationChunk.
"""

from __future__ import annotations

import enum
import logging

from engine.kv_cache import KVCache
from engine.outputs import FinishReason, GenerationChunk, Timings
from engine.sampler import Sampler
from engine.sampling_params import SamplingParams

log = logging.getLogger("moebox.generate")


class StopStringMatcher:
    """Holds back text that could be the start of a stop string, so a stop string
    split over several tokens is still found and never shown."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add new text; return (text safe to emit, whether a stop string matched)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        first = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if first >= 0:
            out, self.pending = self.pending[:first], ""
            return out, True
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:n]):
                    hold = n
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued: holds no KV cache yet
    RUNNING = "running"  # admitted: holds KV blocks, prefilling or decoding
    FINISHED = "finished"


class Sequence:
    """A prompt being generated from. Not thread-safe: one scheduler thread drives it.

    Attributes: `id`, `prompt_ids`, `params`, `output_ids` (generated so far), `status`,
    `finish_reason` ("stop" | "length" | "cancelled" | None), `timings`, `cache` (KVCache while
    running), `block_table` (KV pool block ids it holds), `cached_tokens` (prompt tokens whose
    keys/values came from the prefix cache instead of a forward).
    """

    def __init__(
        self,
        seq_id: int,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        vocab_size: int,
        detokenizer,
        eos_token_ids: tuple[int, ...] = (),
        context_length: int,
    ):
        self.id = seq_id
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.output_ids: list[int] = []
        self.status = SequenceStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.timings = Timings(prompt_n=len(prompt_ids))
        self.context_length = context_length  # tokens this sequence may hold, prompt + output
        self.cache: KVCache | None = None
        self.block_table: list[int] = []
        self.cached_tokens = 0
        self.hashed_blocks = 0  # leading full blocks whose content hash the prefix cache knows
        self.sampler = Sampler(params, vocab_size)
        self.sampler.observe_prompt(self.prompt_ids)
        self.detokenizer = detokenizer
        self.stop_matcher = StopStringMatcher(params.stop)
        self._stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            self._stop_ids |= set(eos_token_ids)

    # --- where it stands ---------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_computed(self) -> int:
        """Tokens whose keys/values the cache holds."""
        return self.cache.length if self.cache is not None else 0

    @property
    def prefill_done(self) -> bool:
        return self.num_computed >= len(self.prompt_ids)

    def token_ids(self, start: int = 0, end: int | None = None) -> list[int]:
        """Prompt and output ids [start:end] as one list."""
        n = len(self.prompt_ids)
        end = self.num_tokens if end is None else end
        if end <= n:
            return self.prompt_ids[start:end]
        if start >= n:
            return self.output_ids[start - n : end - n]
        return self.prompt_ids[start:] + self.output_ids[: end - n]

    # --- what a step produced --------------------------------------------------------------------

    def append_token(self, token: int) -> GenerationChunk:
        """Record a sampled token; the chunk says what text it completed and whether it ended the
        sequence (then `finish` has run and the caller frees the KV blocks)."""
        self.output_ids.append(token)
        self.sampler.observe_output(token)
        self.timings.predicted_n = len(self.output_ids)
        if token in self._stop_ids:
            return self.finish("stop", [token], self.stop_matcher.flush())
        text, stopped = self.stop_matcher.feed(self.detokenizer.add(token))
        if stopped:
            return self.finish("stop", [token], text)
        if len(self.output_ids) >= self.params.max_tokens or self.num_tokens >= self.context_length:
            return self.finish("length", [token], text + self.drain())
        return self.chunk([token], text)

    def drain(self) -> str:
        """Text held back by the detokenizer and the stop matcher (the sequence ends without a stop)."""
        return self.stop_matcher.feed(self.detokenizer.flush())[0] + self.stop_matcher.flush()

    def finish(self, reason: FinishReason, ids: list[int] | None = None, text: str = "") -> GenerationChunk:
        """Mark the sequence finished; returns the last chunk (with the final timings)."""
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
        t = self.timings
        log.info(
            "prompt %d tokens (%d cached), prefill %.1f tok/s; %d generated, decode %.1f tok/s; finish %s",
            t.prompt_n,
            self.cached_tokens,
            t.prompt_per_second,
            t.predicted_n,
            t.predicted_per_second,
            reason,
        )
        chunk = self.chunk(ids or [], text)
        chunk.finish_reason = reason
        chunk.timings = Timings(
            prompt_n=t.prompt_n, prompt_ms=t.prompt_ms, predicted_n=t.predicted_n, predicted_ms=t.predicted_ms
        )
        return chunk

    def chunk(self, ids: list[int], text: str) -> GenerationChunk:
        return GenerationChunk(
            token_ids=ids,
            text=text,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.output_ids),
            cached_tokens=self.cached_tokens,
        )
