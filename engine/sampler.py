"""Choosing the next token from logits: penalties, temperature, top-k/top-p/min-p, seeded draws."""

from __future__ import annotations

import torch

from engine.sampling_params import SamplingParams


class Sampler:
    """Per-sequence sampler. The same seed and logits give the same tokens."""

    def __init__(self, params: SamplingParams, vocab_size: int):
        self.params = params
        self.vocab_size = vocab_size
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()
        # How often each token occurred: prompt+output for the repetition penalty
        # (as vLLM and transformers do), output only for presence/frequency (as OpenAI does).
        self.seen = torch.zeros(vocab_size, dtype=torch.bool)
        self.output_counts = torch.zeros(vocab_size, dtype=torch.float32)

    def observe_prompt(self, ids: list[int]) -> None:
        if ids:
            self.seen[torch.tensor(ids, dtype=torch.long)] = True

    def observe_output(self, token: int) -> None:
        self.seen[token] = True
        self.output_counts[token] += 1

    def apply_penalties(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: [vocab] float32 (a copy is returned when anything changes)."""
        p = self.params
        if p.repetition_penalty != 1.0:
            penalized = torch.where(logits > 0, logits / p.repetition_penalty, logits * p.repetition_penalty)
            logits = torch.where(self.seen, penalized, logits)
        if p.presence_penalty or p.frequency_penalty:
            logits = (
                logits
                - p.presence_penalty * (self.output_counts > 0).float()
                - p.frequency_penalty * self.output_counts
            )
        return logits

    def sample(self, logits: torch.Tensor) -> int:
        """logits: [vocab] (any float dtype) for the last position."""
        p = self.params
        logits = logits[: self.vocab_size].float()
        logits = self.apply_penalties(logits)
        if p.temperature <= 0.0:
            return int(torch.argmax(logits))
        # Huge penalties can push logits to inf; shift the largest to 0 before dividing so a
        # tiny temperature gives -inf for the others (greedy in the limit), never inf - inf = nan.
        logits = torch.nan_to_num(logits, nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
        # (A temperature below float32's smallest normal would round to 0: clamp it there.)
        logits = (logits - logits.max()) / max(p.temperature, torch.finfo(torch.float32).tiny)
        if p.top_k > 0 and p.top_k < logits.numel():
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        ids = None  # candidates' token ids, when the nucleus narrowed them down
        if p.top_p < 1.0:
            ids, probs = nucleus(probs, p.top_p)
        if p.min_p > 0.0:
            probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
        pick = self._draw(probs)
        return int(ids[pick]) if ids is not None else pick

    def _draw(self, probs: torch.Tensor) -> int:
        """An index drawn with probability probs[i] / sum(probs): one uniform number against
        the float64 running sum (torch.multinomial takes milliseconds over a whole vocabulary)."""
        cumulative = torch.cumsum(probs, 0, dtype=torch.float64)
        target = torch.rand((), dtype=torch.float64, generator=self.generator) * cumulative[-1]
        i = int(torch.searchsorted(cumulative, target, right=True))
        if i >= probs.numel() or probs[i] <= 0:  # u * total rounded up to the total
            i = int(torch.nonzero(probs)[-1])
        return i


def nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest set of most likely tokens whose mass reaches top_p (at least one token),
    most likely first: (token ids, their probabilities). The nucleus is usually a few dozen
    tokens, so only the largest k are sorted, k growing until their mass reaches top_p; the
    set is the one a sort of the whole vocabulary gives."""
    n = probs.numel()
    k = min(64, n)
    while True:
        top, ids = torch.topk(probs, k)  # descending
        cumulative = torch.cumsum(top, dim=-1)
        if k == n or cumulative[-1] >= top_p:
            break
        k = min(n, 4 * k)
    # keep the tokens before which less than top_p is gathered (top_p = 0 keeps the first)
    kept = max(1, int((cumulative - top < top_p).sum()))
    return ids[:kept], top[:kept]
