"""Llama-style dense decoders: llama (SmolLM2, Llama 2/3) and qwen2 (q/k/v biases)."""

from __future__ import annotations

import torch
from tqdm import tqdm

from engine.layers.attention import Attention
from engine.layers.mlp import GatedMLP
from engine.layers.rotary_embedding import RotaryEmbedding
from engine.models.decoder import DecoderLayer, DecoderModel
from engine.models.weights import Weights


def rope_for(config, *, interleaved: bool, dim: int | None = None, freq_factors=None) -> RotaryEmbedding:
    s = config.rope_scaling
    return RotaryEmbedding(
        dim or config.rope_dim,
        config.rope_theta,
        interleaved=interleaved,
        scaling_type=s.type,
        factor=s.factor,
        original_context_length=s.original_context_length,
        beta_fast=s.yarn_beta_fast,
        beta_slow=s.yarn_beta_slow,
        mscale_all_dim=s.mscale_all_dim,
        freq_factors=freq_factors,
    )


def gqa_attention(w: Weights, config, i: int, rope: RotaryEmbedding) -> Attention:
    p = f"blk.{i}."
    qk_norm = config.qk_norm
    return Attention(
        i,
        w.fused_linear([p + f"attn_{x}.weight" for x in "qkv"], [p + f"attn_{x}.bias" for x in "qkv"]),
        w.linear(p + "attn_output.weight"),
        config.n_heads,
        config.n_kv_heads,
        config.head_dim,
        rope,
        q_norm=w.norm(p + "attn_q_norm.weight", config.rms_norm_eps) if qk_norm else None,
        k_norm=w.norm(p + "attn_k_norm.weight", config.rms_norm_eps) if qk_norm else None,
    )


def dense_mlp(w: Weights, prefix: str, suffix: str = "") -> GatedMLP:
    return GatedMLP(
        w.fused_linear([f"{prefix}ffn_gate{suffix}.weight", f"{prefix}ffn_up{suffix}.weight"]),
        w.linear(f"{prefix}ffn_down{suffix}.weight"),
    )


def finish(w: Weights, config, layers: list[DecoderLayer]) -> DecoderModel:
    head = "token_embd.weight" if config.tied_embeddings else "output.weight"
    return DecoderModel(
        config,
        w.embedding("token_embd.weight"),
        layers,
        w.norm("output_norm.weight", config.rms_norm_eps),
        w.linear(head, placed_as="output.weight"),
        device=w.placement.compute_device,
    )


def load(w: Weights, config, progress: bool = True) -> DecoderModel:
    # llama.cpp's converter permutes llama q/k into interleaved pairs; qwen2 keeps the neox halves.
    # Llama 3.1+ files carry per-pair frequency factors (the "llama3" rope scaling)
    factors = w.tensor("rope_freqs.weight", torch.float32, "cpu") if w.has("rope_freqs.weight") else None
    rope = rope_for(config, interleaved=config.architecture == "llama", freq_factors=factors)
    layers = []
    for i in tqdm(range(config.n_layers), desc="loading layers", unit="layer", disable=not progress):
        p = f"blk.{i}."
        layers.append(
            DecoderLayer(
                w.norm(p + "attn_norm.weight", config.rms_norm_eps),
                gqa_attention(w, config, i, rope),
                w.norm(p + "ffn_norm.weight", config.rms_norm_eps),
                dense_mlp(w, p),
            )
        )
    return finish(w, config, layers)
