"""One generation request run step by step: prefill, then one token per step.

A scheduler (the HTTP gateway's, or `LLM.generate`) interleaves several
sequences by calling `step()` on each in turn and may `cancel()` one between
steps; either way the sequence's KV cache is freed when it finishes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch

from engine.kv_cache import KVCache
from engine.outputs import FinishReason, GenerationChunk, Timings
from engine.sampler import Sampler
from engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from engine.llm import LLM

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


class Sequence:
    """A prompt being generated from. Not thread-safe: drive it from one thread.

    Attributes: `prompt_ids`, `params`, `output_ids` (generated so far),
    `finished`, `finish_reason` ("stop" | "length" | "cancelled" | None),
    `timings` (Timings, filled as it runs).
    """

    def __init__(self, llm: LLM, prompt_ids: list[int], params: SamplingParams, prefill_chunk: int = 0):
        self.llm = llm
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.output_ids: list[int] = []
        self.finished = False
        self.finish_reason: FinishReason | None = None
        self.timings = Timings(prompt_n=len(prompt_ids))
        self.prefill_chunk = prefill_chunk
        self.cache: KVCache | None = llm.model.new_cache(llm.context_length)
        self.sampler = Sampler(params, llm.config.vocab_size)
        self.sampler.observe_prompt(self.prompt_ids)
        self.detokenizer = llm.new_detokenizer(self.prompt_ids)
        self.stop_matcher = StopStringMatcher(params.stop)
        self._stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            self._stop_ids |= set(llm.eos_token_ids)
        self._prefilled = 0
        self._next_logits: torch.Tensor | None = None

    @property
    def prefill_done(self) -> bool:
        return self._prefilled == len(self.prompt_ids)

    def step(self) -> GenerationChunk:
        """Advance by one unit of work and report what it produced.

        Until the prompt is consumed a step runs (a chunk of) prefill; the step
        that finishes prefill also samples the first token. Each later step
        decodes one token. A chunk may have no tokens (prefill in progress) or
        no text (a partial UTF-8 character or a possible stop string held back).
        The chunk with `finish_reason` set is the last; the KV cache is then freed.
        Calling step() on a finished sequence is an error (RuntimeError).
        """
        if self.finished:
            raise RuntimeError("step() on a finished sequence")
        if not self.prefill_done:
            t0 = time.perf_counter()
            todo = len(self.prompt_ids) - self._prefilled
            n = min(todo, self.prefill_chunk) if self.prefill_chunk > 0 else todo
            ids = self.prompt_ids[self._prefilled : self._prefilled + n]
            logits = self.llm.model.forward(torch.tensor(ids, dtype=torch.long), self.cache)
            self._prefilled += n
            self.timings.prompt_ms += (time.perf_counter() - t0) * 1e3
            if not self.prefill_done:
                return self._chunk([], "")
            self._next_logits = logits[-1].cpu()
            t0 = time.perf_counter()
            chunk = self._emit_token()
            self.timings.predicted_ms += (time.perf_counter() - t0) * 1e3
            return chunk
        t0 = time.perf_counter()
        logits = self.llm.model.forward(torch.tensor(self.output_ids[-1:], dtype=torch.long), self.cache)
        self._next_logits = logits[-1].cpu()
        chunk = self._emit_token()
        self.timings.predicted_ms += (time.perf_counter() - t0) * 1e3
        return chunk

    def _emit_token(self) -> GenerationChunk:
        token = self.sampler.sample(self._next_logits)
        self.output_ids.append(token)
        self.sampler.observe_output(token)
        self.timings.predicted_n = len(self.output_ids)
        if token in self._stop_ids:
            return self._finish([token], self.stop_matcher.flush(), "stop")
        text, stopped = self.stop_matcher.feed(self.detokenizer.add(token))
        if stopped:
            return self._finish([token], text, "stop")
        if (
            len(self.output_ids) >= self.params.max_tokens
            or len(self.prompt_ids) + len(self.output_ids) >= self.cache.capacity
        ):
            return self._finish(
                [token],
                text + self.stop_matcher.feed(self.detokenizer.flush())[0] + self.stop_matcher.flush(),
                "length",
            )
        return self._chunk([token], text)

    def cancel(self) -> GenerationChunk:
        """Stop now (between steps) and free the KV cache; returns the final chunk."""
        if self.finished:
            return self._chunk([], "")
        return self._finish([], "", "cancelled")

    def _finish(self, ids: list[int], text: str, reason: FinishReason) -> GenerationChunk:
        self.finished = True
        self.finish_reason = reason
        if self.cache is not None:
            self.cache.free()
            self.cache = None
        t = self.timings
        log.info(
            "prompt %d tokens, prefill %.1f tok/s; %d generated, decode %.1f tok/s; finish %s",
            t.prompt_n,
            t.prompt_per_second,
            t.predicted_n,
            t.predicted_per_second,
            reason,
        )
        chunk = self._chunk(ids, text)
        chunk.finish_reason = reason
        chunk.timings = Timings(
            prompt_n=t.prompt_n, prompt_ms=t.prompt_ms, predicted_n=t.predicted_n, predicted_ms=t.predicted_ms
        )
        return chunk

    def _chunk(self, ids: list[int], text: str) -> GenerationChunk:
        return GenerationChunk(
            token_ids=ids,
            text=text,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.output_ids),
        )
