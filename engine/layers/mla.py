"""Multi-head latent attention (DeepSeek-V2/V3/R1).

The cache holds per token only the normalized latent c_kv [kv_lora_rank] and
the shared rope key k_pe [rope_dim], never the expanded per-head K and V.

Weights as GGUF files store them: k_b [heads, kv_lora, nope] and
v_b [heads, v_dim, kv_lora] (older files carry one kv_b [heads * (nope + v_dim),
kv_lora], split at load).

Two ways to the same result:
  - expanded (prefill): K_nope = c_kv k_b^T and V = c_kv v_b^T per head, then
    ordinary attention; cheaper when many queries share the keys. Over a long context
    the expanded keys and values of all heads are large (R1, 32K tokens, f32: 7 GiB),
    so the heads go a group at a time, their temporaries within EXPANDED_BYTES;
  - absorbed (decode): q_nope is moved into latent space (q_nope k_b) and the
    attention runs against c_kv directly; the output latent goes through v_b.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.kv_cache import ForwardBatch
from engine.layers.attention import causal_mask
from engine.layers.linear import Linear
from engine.layers.rmsnorm import RMSNorm
from engine.layers.rotary_embedding import RotaryEmbedding

# The most bytes the expanded keys and values (k_nope, v and k = [k_nope, k_pe]) of one group
# of heads take in a prefill; engine/plan.py counts the same among the work buffers.
EXPANDED_BYTES = 256 * 2**20


def expanded_heads(n_heads: int, context: int, values_per_head_token: int, elem_bytes: int) -> int:
    """Heads expanded at once over `context` cached tokens: as many as fit EXPANDED_BYTES, at least one."""
    per_head = context * values_per_head_token * elem_bytes
    return max(1, min(n_heads, EXPANDED_BYTES // max(per_head, 1)))


class MLAttention:
    def __init__(
        self,
        layer: int,
        *,
        q: Linear | None,
        q_a: Linear | None,
        q_a_norm: RMSNorm | None,
        q_b: Linear | None,
        kv_a: Linear,
        kv_a_norm: RMSNorm,
        k_b: torch.Tensor,  # [heads, kv_lora, nope]
        v_b: torch.Tensor,  # [heads, v_dim, kv_lora]
        o: Linear,
        n_heads: int,
        kv_lora_rank: int,
        qk_nope_head_dim: int,
        qk_rope_head_dim: int,
        v_head_dim: int,
        rope: RotaryEmbedding,
        absorb: str = "decode",  # "decode": absorbed for single-token steps | "always" | "never"
    ):
        self.layer = layer
        self.q, self.q_a, self.q_a_norm, self.q_b = q, q_a, q_a_norm, q_b
        self.kv_a, self.kv_a_norm = kv_a, kv_a_norm
        self.k_b, self.v_b, self.o = k_b, v_b, o
        self.n_heads = n_heads
        self.kv_lora_rank = kv_lora_rank
        self.nope, self.rope_dim, self.v_dim = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        self.rope = rope
        self.absorb = absorb
        self.scale = (qk_nope_head_dim + qk_rope_head_dim) ** -0.5 * rope.attention_scale

    def __call__(self, x: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        """x: [T, hidden], the rows of every sequence in the batch → [T, hidden]. Projections and rope
        run on all rows; each sequence attends over its own latent cache."""
        t = x.shape[0]
        positions = batch.positions
        q = self.q(x) if self.q is not None else self.q_b(self.q_a_norm(self.q_a(x)))
        q = q.view(t, self.n_heads, self.nope + self.rope_dim)
        q_nope, q_pe = q.split([self.nope, self.rope_dim], dim=-1)  # [T, heads, nope], [T, heads, rope]
        q_pe = self.rope.apply(q_pe, positions)

        kv = self.kv_a(x)  # [T, kv_lora + rope]
        c_kv = self.kv_a_norm(kv[:, : self.kv_lora_rank])  # [T, kv_lora]
        k_pe = self.rope.apply(kv[:, self.kv_lora_rank :].unsqueeze(1), positions).squeeze(1)  # [T, rope]
        outs = []
        for s in batch.segments:
            rows = slice(s.start, s.end)
            c_all, pe_all = s.cache.update(self.layer, c_kv[rows], k_pe[rows])  # [S, kv_lora], [S, rope]
            c_all, pe_all = c_all.to(x.dtype), pe_all.to(x.dtype)
            n = s.end - s.start
            absorbed = self.absorb == "always" or (self.absorb == "decode" and n == 1)
            attend = self._absorbed if absorbed else self._expanded
            outs.append(attend(q_nope[rows], q_pe[rows], c_all, pe_all))  # [n, heads, v_dim]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return self.o(out.reshape(t, self.n_heads * self.v_dim))

    def _absorbed(self, q_nope, q_pe, c_all, pe_all) -> torch.Tensor:
        t, s = q_nope.shape[0], c_all.shape[0]
        q_lat = torch.einsum("thn,hkn->htk", q_nope, self.k_b.to(q_nope.dtype))  # [heads, T, kv_lora]
        scores = torch.matmul(q_lat, c_all.t()) + torch.matmul(
            q_pe.transpose(0, 1), pe_all.t()
        )  # [heads, T, S]
        scores = scores.float() * self.scale
        mask = causal_mask(t, s, q_nope.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(q_nope.dtype)
        o_lat = torch.matmul(probs, c_all)  # [heads, T, kv_lora]
        return torch.einsum("htk,hvk->thv", o_lat, self.v_b.to(o_lat.dtype))  # [T, heads, v_dim]

    def _expanded(self, q_nope, q_pe, c_all, pe_all) -> torch.Tensor:
        t, s = q_nope.shape[0], c_all.shape[0]
        mask = causal_mask(t, s, q_nope.device)
        q = torch.cat([q_nope, q_pe], dim=-1).transpose(0, 1)  # [heads, T, nope + rope]
        per_token = 2 * self.nope + self.v_dim + self.rope_dim  # k_nope, v, k values per head and token
        group = expanded_heads(self.n_heads, s, per_token, c_all.element_size())
        outs = []
        for h in range(0, self.n_heads, group):
            heads = slice(h, h + group)
            k_b, v_b = self.k_b[heads].to(c_all.dtype), self.v_b[heads].to(c_all.dtype)
            k_nope = torch.einsum("sk,hkn->hsn", c_all, k_b)  # [group, S, nope]
            v = torch.einsum("sk,hvk->hsv", c_all, v_b)  # [group, S, v_dim]
            n = k_nope.shape[0]
            k = torch.cat([k_nope, pe_all.unsqueeze(0).expand(n, s, self.rope_dim)], dim=-1)
            outs.append(F.scaled_dot_product_attention(q[heads], k, v, attn_mask=mask, scale=self.scale))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)  # [heads, T, v_dim]
        return out.transpose(0, 1)  # [T, heads, v_dim]
