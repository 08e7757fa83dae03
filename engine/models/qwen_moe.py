"""Qwen2-MoE and Qwen3-MoE: GQA attention (qwen3: per-head q/k RMSNorm, qwen2moe: q/k/v
biases), softmax-routed experts; qwen2moe adds a sigmoid-gated shared expert."""

from __future__ import annotations

from tqdm import tqdm

from engine.layers.linear import Linear
from engine.layers.moe import MoE, Router
from engine.models.decoder import DecoderLayer, DecoderModel
from engine.models.llama import dense_mlp, finish, gqa_attention, rope_for
from engine.models.weights import Weights


def load(w: Weights, config, progress: bool = True) -> DecoderModel:
    rope = rope_for(config, interleaved=False)
    moe = config.moe
    layers = []
    for i in tqdm(range(config.n_layers), desc="loading layers", unit="layer", disable=not progress):
        p = f"blk.{i}."
        shared = gate = None
        if w.has(p + "ffn_up_shexp.weight"):
            shared = dense_mlp(w, p, "_shexp")
            if w.has(p + "ffn_gate_inp_shexp.weight"):
                gate_w = w.tensor(p + "ffn_gate_inp_shexp.weight").reshape(1, -1)
                gate = Linear(gate_w)
        ffn = MoE(
            Router(
                w.tensor(p + "ffn_gate_inp.weight"),
                moe.n_experts_used,
                gating="softmax",
                # llama.cpp always normalizes Qwen3-MoE's top-k weights and never Qwen2-MoE's.
                normalize=config.architecture == "qwen3moe",
            ),
            w.experts(p),
            shared,
            gate,
        )
        layers.append(
            DecoderLayer(
                w.norm(p + "attn_norm.weight", config.rms_norm_eps),
                gqa_attention(w, config, i, rope),
                w.norm(p + "ffn_norm.weight", config.rms_norm_eps),
                ffn,
            )
        )
    return finish(w, config, layers)
