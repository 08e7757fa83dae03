"""Grouped-query attention with rotary positions (llama, qwen2, qwen2moe, qwen3moe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.kv_cache import KVCache
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

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        t = x.shape[0]
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        # slicing rather than Tensor.split (a Python-level wrapper): this runs per layer per token
        qkv = self.qkv(x)
        qk = qkv[:, : q_size + kv_size].reshape(t, self.n_heads + self.n_kv_heads, self.head_dim)
        v = qkv[:, q_size + kv_size :].reshape(t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = qk.split([self.n_heads, self.n_kv_heads], dim=1)
            qk = torch.cat([self.q_norm(q), self.k_norm(k)], dim=1)
        # q and k heads rotate together: one rope call per layer
        qk = self.rope.apply(qk, positions)
        q, k = qk[:, : self.n_heads], qk[:, self.n_heads :]
        k_all, v_all = cache.update(self.layer, k, v)  # [S, kv_heads, head_dim]
        if t == 1:
            return self.o(self._decode(q, k_all, v_all))
        s = k_all.shape[0]
        mask = causal_mask(t, s, x.device)
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1),  # [heads, T, head_dim]
            k_all.transpose(0, 1).to(q.dtype),
            v_all.transpose(0, 1).to(q.dtype),
            attn_mask=mask,
            scale=self.scale,
            enable_gqa=self.n_heads != self.n_kv_heads,
        )  # [heads, T, head_dim]
        return self.o(out.transpose(0, 1).reshape(t, self.n_heads * self.head_dim))

    def _decode(self, q: torch.Tensor, k_all: torch.Tensor, v_all: torch.Tensor) -> torch.Tensor:
        """One query: the heads sharing a KV head form one small batched matmul."""
        rep = self.n_heads // self.n_kv_heads
        qg = q.view(self.n_kv_heads, rep, self.head_dim)  # [kv_heads, rep, head_dim]
        if k_all.dtype != q.dtype:
            k_all, v_all = k_all.to(q.dtype), v_all.to(q.dtype)
        k = k_all.transpose(0, 1)  # [kv_heads, S, head_dim]
        v = v_all.transpose(0, 1)
        scores = torch.bmm(qg, k.transpose(1, 2))
        if q.dtype == torch.float32:  # the common case: no conversions, scale in place
            probs = torch.softmax(scores.mul_(self.scale), dim=-1)
        else:
            probs = torch.softmax(scores.float() * self.scale, dim=-1).to(q.dtype)
        return torch.bmm(probs, v).reshape(1, self.n_heads * self.head_dim)  # [1, heads * head_dim]
