"""Grouped-query attention with rotary positions (llama, qwen2, qwen2moe, qwen3moe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.kv_cache import ForwardBatch, KVCache
from engine.layers import fused
from engine.layers.linear import Linear
from engine.layers.rmsnorm import RMSNorm
from engine.layers.rotary_embedding import RotaryEmbedding


def causal_mask(q_len: int, k_len: int, device=None) -> torch.Tensor | None:
    """Boolean [q_len, k_len] mask (True = may attend) for queries that are the last
    q_len of k_len positions; None when plain causal or single-query attention suffices."""
    if q_len == 1:
        return None
    offset = k_len - q_len
    i = torch.arange(q_len, device=device).unsqueeze(1)
    j = torch.arange(k_len, device=device).unsqueeze(0)
    return j <= i + offset


class Attention:
    def __init__(
        self,
        layer: int,
        qkv: Linear,  # q, k and v rows stacked: [(heads + 2 * kv_heads) * head_dim, hidden]
        o: Linear,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        rope: RotaryEmbedding,
        q_norm: RMSNorm | None = None,
        k_norm: RMSNorm | None = None,
    ):
        self.layer = layer
        # qkv is consumed by rope and the cache write, o by the residual add: neither result outlives the step
        self.qkv, self.o = qkv.reuse_row_output(), o.reuse_row_output()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.rope = rope
        self.q_norm, self.k_norm = q_norm, k_norm
        self.scale = head_dim**-0.5
        self._attn_row = fused.RowBuffer(n_heads * head_dim)  # consumed by o at once
        self.ops = fused.ops_for(qkv.device)

    def __call__(self, x: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """x: [T, hidden], the rows of every sequence in the batch → [T, hidden]. The projections run
        on all rows at once; each sequence attends over its own cache with the ops a run of it alone
        would use, so its rows do not depend on what else is in the batch."""
        qkv = self.qkv(x)  # [T, (heads + 2 kv_heads) * head_dim]
        if len(batch.segments) == 1:
            s = batch.segments[0]
            return self.o(self._attend(qkv, s.positions, s.cache, self._attn_row))
        # several sequences: each result is kept until o, so none may go to the shared row buffer
        out = [self._attend(qkv[s.start : s.end], s.positions, s.cache, None) for s in batch.segments]
        return self.o(torch.cat(out))

    def _attend(
        self, qkv: torch.Tensor, positions: torch.Tensor, cache: KVCache, row: fused.RowBuffer | None
    ) -> torch.Tensor:
        """One sequence's new rows of qkv (overwritten) → attention output [t, heads * head_dim]."""
        t = qkv.shape[0]
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        # qwen3 decode step: each q and k head normalized in place, then the fused path below
        norm_in_place = t == 1 and self.q_norm is not None and self.ops.native
        if norm_in_place:
            self.q_norm.apply_(qkv[0, :q_size].view(self.n_heads, self.head_dim))
            self.k_norm.apply_(qkv[0, q_size : q_size + kv_size].view(self.n_kv_heads, self.head_dim))
        if t == 1:
            # rope, cache append and attention as one CPU kernel where the cache allows it
            out = self.ops.rope_cache_attend(
                qkv,
                self.rope,
                positions,
                cache,
                self.layer,
                self.n_heads,
                self.n_kv_heads,
                self.head_dim,
                self.scale,
                row,
            )
            if out is not None:
                return out
        # slicing rather than Tensor.split (a Python-level wrapper): this runs per layer per token
        qk = qkv[:, : q_size + kv_size].reshape(t, self.n_heads + self.n_kv_heads, self.head_dim)
        v = qkv[:, q_size + kv_size :].reshape(t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None and not norm_in_place:
            q, k = qk.split([self.n_heads, self.n_kv_heads], dim=1)
            qk = torch.cat([self.q_norm(q), self.k_norm(k)], dim=1)
        # q and k heads rotate together, in place (qk is this step's own buffer): one rope call per layer
        qk = self.ops.rope_(self.rope, qk, positions)
        q, k = qk[:, : self.n_heads], qk[:, self.n_heads :]
        k_all, v_all = cache.update(self.layer, k, v)  # [S, kv_heads, head_dim]
        if t == 1:
            return self.ops.attend_one(q[0], k_all, v_all, self.scale, row)
        s = k_all.shape[0]
        mask = causal_mask(t, s, qkv.device)
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1),  # [heads, T, head_dim]
            k_all.transpose(0, 1).to(q.dtype),
            v_all.transpose(0, 1).to(q.dtype),
            attn_mask=mask,
            scale=self.scale,
            enable_gqa=self.n_heads != self.n_kv_heads,
        )  # [heads, T, head_dim]
        return out.transpose(0, 1).reshape(t, self.n_heads * self.head_dim)
