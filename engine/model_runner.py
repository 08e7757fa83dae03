"""One forward for a whole scheduler step, and the sampling of its new tokens.

A step is a list of (sequence, n): the next n tokens of each sequence that still lack keys and
values, a decode token (n = 1) or a chunk of its prompt. They go through the model as one batch
of rows (engine/models/decoder.py forward_batch): every matmul, norm and MoE call sees all of
them, so an expert's weights are read once per step for every request routed to it; attention
runs per sequence over its own cache.
"""

from __future__ import annotations

import torch

from engine.kv_cache import ForwardBatch
from engine.sequence import Sequence


class ModelRunner:
    def __init__(self, model):
        self.model = model

    def run(self, batch: list[tuple[Sequence, int]]) -> list[int | None]:
        """Compute the scheduled tokens; return, per sequence, the token sampled after them, or None
        where its tokens are not all computed yet (a prompt chunk that is not the last)."""
        ids: list[int] = []
        parts = []
        sample_rows: list[int] = []  # the last row of each sequence whose tokens this step completes
        for seq, n in batch:
            start = seq.num_computed
            ids += seq.token_ids(start, start + n)
            parts.append((seq.cache, n))
            if start + n == seq.num_tokens:
                sample_rows.append(len(ids) - 1)
        fb = ForwardBatch(parts, self.model.device)
        logits = self.model.forward_batch(torch.tensor(ids, dtype=torch.long), fb, sample_rows).cpu()
        rows, last = iter(logits), set(sample_rows)  # [vocab] per row of sample_rows, in batch order
        return [
            seq.sampler.sample(next(rows)) if s.end - 1 in last else None
            for (seq, _), s in zip(batch, fb.segments, strict=True)
        ]


__all__ = ["ModelRunner"]
