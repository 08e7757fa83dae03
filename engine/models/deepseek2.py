"""DeepSeek-V2 / V2-Lite / V3 / R1: MLA attention, leading dense layers, then MoE
layers with shared experts (softmax routing for V2, sigmoid + bias for V3/R1)."""

from __future__ import annotations

from tqdm import tqdm

from engine.config import GatingFunc, MLALayout
from engine.layers.mla import MLAttention
from engine.layers.moe import MoE, Router
from engine.models.decoder import DecoderLayer, DecoderModel
from engine.models.llama import dense_mlp, finish, rope_for
from engine.models.weights import Weights


def mla_attention(w: Weights, config, i: int, rope) -> MLAttention:
    p = f"blk.{i}."
    mla, eps, nh = config.mla, config.rms_norm_eps, config.n_heads
    if mla.layout is MLALayout.K_B_V_B:
        k_b = w.tensor(p + "attn_k_b.weight").reshape(nh, mla.kv_lora_rank, mla.qk_nope_head_dim)
        v_b = w.tensor(p + "attn_v_b.weight").reshape(nh, mla.v_head_dim, mla.kv_lora_rank)
    else:
        kv_b = w.tensor(p + "attn_kv_b.weight").reshape(
            nh, mla.qk_nope_head_dim + mla.v_head_dim, mla.kv_lora_rank
        )
        k_b = kv_b[:, : mla.qk_nope_head_dim].transpose(1, 2).contiguous()  # [heads, kv_lora, nope]
        v_b = kv_b[:, mla.qk_nope_head_dim :].contiguous()  # [heads, v_dim, kv_lora]
    has_q_lora = mla.q_lora_rank > 0
    return MLAttention(
        i,
        q=None if has_q_lora else w.linear(p + "attn_q.weight"),
        q_a=w.linear(p + "attn_q_a.weight") if has_q_lora else None,
        q_a_norm=w.norm(p + "attn_q_a_norm.weight", eps) if has_q_lora else None,
        q_b=w.linear(p + "attn_q_b.weight") if has_q_lora else None,
        kv_a=w.linear(p + "attn_kv_a_mqa.weight"),
        kv_a_norm=w.norm(p + "attn_kv_a_norm.weight", eps),
        k_b=k_b,
        v_b=v_b,
        o=w.linear(p + "attn_output.weight"),
        n_heads=nh,
        kv_lora_rank=mla.kv_lora_rank,
        qk_nope_head_dim=mla.qk_nope_head_dim,
        qk_rope_head_dim=mla.qk_rope_head_dim,
        v_head_dim=mla.v_head_dim,
        rope=rope,
    )


def load(w: Weights, config, progress: bool = True) -> DecoderModel:
    rope = rope_for(config, interleaved=True, dim=config.mla.qk_rope_head_dim)
    moe = config.moe
    layers = []
    for i in tqdm(range(config.n_layers), desc="loading layers", unit="layer", disable=not progress):
        p = f"blk.{i}."
        if config.is_moe_layer(i):
            sigmoid = moe.gating is GatingFunc.SIGMOID
            ffn = MoE(
                Router(
                    w.tensor(p + "ffn_gate_inp.weight"),
                    moe.n_experts_used,
                    gating="sigmoid" if sigmoid else "softmax",
                    bias=w.tensor(p + "exp_probs_b.bias") if w.has(p + "exp_probs_b.bias") else None,
                    n_groups=moe.n_groups,
                    n_groups_used=moe.n_groups_used,
                    normalize=moe.weights_norm,
                    scale=moe.weights_scale or 1.0,
                ),
                w.experts(p),
                dense_mlp(w, p, "_shexp") if w.has(p + "ffn_up_shexp.weight") else None,
            )
        else:
            ffn = dense_mlp(w, p)
        layers.append(
            DecoderLayer(
                w.norm(p + "attn_norm.weight", config.rms_norm_eps),
                mla_attention(w, config, i, rope),
                w.norm(p + "ffn_norm.weight", config.rms_norm_eps),
                ffn,
            )
        )
    return finish(w, config, layers)
