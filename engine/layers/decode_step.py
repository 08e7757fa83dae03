"""One decode token through a whole decoder layer in one native call (CPU, float32).

A decode step on the CPU is a dozen kernels per layer of a few microseconds each;
Python between them and the kernel threads waking for each cost about as much as
the kernels on a small CPU. `LayerStep` hands the layer's weights (zero-copy) to
moebox_native.DecodeLayer once, then runs each single-token step as one call
that runs the same kernels the per-op path uses, in the same order.

It covers pre-norm layers with grouped-query attention (llama, qwen2 without
biases, qwen3 with its per-head q/k norms) and a SwiGLU FFN or softmax-routed
experts without shared experts (Qwen3-MoE). Anything else (biases, MLA, shared
experts, sigmoid routers, weights on a GPU, other cache dtypes) keeps the
per-op path: `LayerStep.build` returns None.
"""

from __future__ import annotations

import torch

from engine.layers import fused
from engine.layers.attention import Attention
from engine.layers.linear import Linear, NativeMatrix
from engine.layers.mlp import GatedMLP
from engine.layers.moe import MoE
from engine.layers.rmsnorm import RMSNorm
from engine.native import cpu_kernels


def _native_weight(linear: Linear) -> NativeMatrix | None:
    if not isinstance(linear, Linear) or not linear.native or linear.bias is not None:
        return None
    return linear.weight


def _native_norm(norm: RMSNorm | None) -> bool:
    return norm is None or norm.ops.native


class LayerStep:
    def __init__(self, native_layer, attn: Attention, hidden: int):
        self.native = native_layer
        self.attn = attn
        self.out = fused.RowBuffer(hidden)  # the layer's output row, read by the next layer at once

    @classmethod
    def build(cls, attn_norm: RMSNorm, attn, ffn_norm: RMSNorm, ffn) -> LayerStep | None:
        native = cpu_kernels()
        if native is None or not isinstance(attn, Attention):
            return None
        qkv, o = _native_weight(attn.qkv), _native_weight(attn.o)
        if (
            qkv is None
            or o is None
            or not all(_native_norm(n) for n in (attn_norm, ffn_norm, attn.q_norm, attn.k_norm))
        ):
            return None
        if attn_norm.eps != ffn_norm.eps or (attn.q_norm is not None and attn.q_norm.eps != attn.k_norm.eps):
            return None
        kwargs = {}
        if isinstance(ffn, GatedMLP):
            gate_up, down = _native_weight(ffn.gate_up), _native_weight(ffn.down)
            if gate_up is None or down is None:
                return None
            kwargs.update(
                gate_up=gate_up.data, gate_up_type=gate_up.ggml_type, down=down.data, down_type=down.ggml_type
            )
        elif isinstance(ffn, MoE):
            router, experts = ffn.router, ffn.experts
            if (
                ffn.shared is not None
                or router.gating != "softmax"
                or router.bias is not None
                or (router.n_groups > 1 and router.n_groups_used < router.n_groups)
                or router.native_logits is None
                or experts.native is None
            ):
                return None
            kwargs.update(
                router=router.native_logits.data,
                experts=experts.native,
                top_k=router.top_k,
                normalize=router.normalize,
                expert_scale=router.scale,
            )
        else:
            return None
        hidden = qkv.cols
        qk = {}
        if attn.q_norm is not None:
            qk = {"q_norm": attn.q_norm.weight, "k_norm": attn.k_norm.weight, "qk_eps": attn.q_norm.eps}
        layer = native.DecodeLayer(
            hidden=hidden,
            heads=attn.n_heads,
            kv_heads=attn.n_kv_heads,
            dim=attn.head_dim,
            eps=attn_norm.eps,
            scale=attn.scale,
            interleaved=attn.rope.interleaved,
            attn_norm=attn_norm.weight.numpy(),
            ffn_norm=ffn_norm.weight.numpy(),
            qkv=qkv.data,
            qkv_type=qkv.ggml_type,
            o=o.data,
            o_type=o.ggml_type,
            **{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in qk.items()},
            **kwargs,
        )
        return cls(layer, attn, hidden)

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor | None:
        """The layer's output for one token x [1, hidden] f32, or None where the cache holds
        another dtype than float32/float16 (the caller then runs the ops)."""
        attn = self.attn
        if cache.dtype not in (torch.float32, torch.float16):
            return None
        shape = (attn.n_kv_heads, attn.head_dim)
        k_buf, v_buf = cache.reserve(attn.layer, 1, shape, shape)
        cos, sin, pos = attn.rope.tables_for(positions)
        self.native.step(
            fused.as_array(x.contiguous()),
            self.out.array,
            cos,
            sin,
            int(pos[0]),
            k_buf.numpy(),
            v_buf.numpy(),
            cache.length,
        )
        return self.out.tensor


__all__ = ["LayerStep"]
