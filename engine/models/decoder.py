"""The decoder skeleton every supported model shares:
embedding → N × (norm → attention → residual, norm → FFN or MoE → residual) → norm → logits."""

from __future__ import annotations

import torch

from engine.kv_cache import ForwardBatch, KVCache
from engine.layers.decode_step import LayerStep
from engine.layers.embedding import Embedding
from engine.layers.linear import Linear
from engine.layers.rmsnorm import RMSNorm


class DecoderLayer:
    def __init__(self, attn_norm: RMSNorm, attn, ffn_norm: RMSNorm, ffn):
        # each norm's output is consumed by the next matmul at once
        self.attn_norm, self.ffn_norm = attn_norm.reuse_row_output(), ffn_norm.reuse_row_output()
        self.attn, self.ffn = attn, ffn
        # a CPU decode step runs the whole layer in one native call where its weights allow it
        self._step = LayerStep.build(self.attn_norm, self.attn, self.ffn_norm, self.ffn)

    def __call__(self, x: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """x: [T, hidden], the rows of every sequence in the step. Norms, matmuls and the MoE (one
        native call for the routed experts of all rows) see all rows; attention goes per sequence."""
        if self._step is not None and x.shape[0] == 1:
            s = batch.segments[0]
            out = self._step(x, s.positions, s.cache)
            if out is not None:
                return out
        h = x + self.attn(self.attn_norm(x), batch)
        return h + self.ffn(self.ffn_norm(h))


class DecoderModel:
    """A loaded model. `forward(ids, cache)` runs new tokens after what the cache holds."""

    def __init__(
        self,
        config,
        embed: Embedding,
        layers: list[DecoderLayer],
        norm: RMSNorm,
        lm_head: Linear,
        device: str = "cpu",
        cache_dtype: torch.dtype = torch.float32,
    ):
        self.config = config
        self.embed, self.layers, self.norm, self.lm_head = embed, layers, norm, lm_head
        self.device = device
        self.cache_dtype = cache_dtype

    def new_cache(self, capacity: int) -> KVCache:
        return KVCache(len(self.layers), capacity, dtype=self.cache_dtype, device=self.device)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache: KVCache, *, all_logits: bool = False) -> torch.Tensor:
        """One sequence: ids [T] int64 after what the cache holds → logits [T, vocab] f32 (all_logits)
        or [1, vocab] for the last token."""
        t = ids.shape[0]
        return self.forward_batch(
            ids, ForwardBatch([(cache, t)], self.device), None if all_logits else [t - 1]
        )

    @torch.inference_mode()
    def forward_batch(
        self, ids: torch.Tensor, batch: ForwardBatch, logit_rows: list[int] | None
    ) -> torch.Tensor:
        """Several sequences in one pass: ids [T] int64, the new tokens of each sequence in the
        order of batch.segments → logits [len(logit_rows), vocab] f32 for the rows asked for
        (all rows for None). Every cache advances by its segment's tokens."""
        t = ids.shape[0]
        x = self.embed(ids).to(self.device)  # [T, hidden]
        for layer in self.layers:
            x = layer(x, batch)
        batch.advance()
        if logit_rows is not None:
            if not logit_rows:  # prompt chunks only: nothing to sample yet
                return torch.empty((0, self.lm_head.out_features), dtype=torch.float32)
            x = x[-1:] if logit_rows == [t - 1] else x[logit_rows]
        return self.lm_head(self.norm(x)).float()
