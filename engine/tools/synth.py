"""Synthetic model GGUFs: real architectures and tensor names, random weights.

Tests use the tiny shapes; benchmarks use real widths (DeepSeek-V3 with a few
layers, Qwen3-30B-A3B) on machines that cannot download models. Tensor and
key names are exactly those llama.cpp's converter writes, so llama.cpp and
moebox read the same file. Quantized tensors are random blocks with sane
scales (no quantizer runs), so writing tens of GB takes minutes.

Note for oracles: llama.cpp's converter permutes llama q/k rows for its rope
layout; a Hugging Face LlamaForCausalLM loaded from these random weights must
undo that permutation (see `unpermute_llama_qk`).

Routing. A trained MoE model spreads a batch over nearly all experts; benchmarks
are only meaningful if these files do too (engine/tools/routing.py counts it).
At real widths they used to send every token to the same experts (512 random
tokens: DeepSeek-V3 8 of 256 experts per MoE layer, Qwen3-30B-A3B 8 of 128,
DeepSeek-V2-Lite 6 of 64). Three causes, each fixed where it arises:
  1. Random K-quant / Q4_0 blocks had a common offset (the matrix mean was up to
     0.8 of its std), which made one direction (all-ones) grow in every layer until
     it was every token's hidden state. Blocks are now centred like real quantized
     weights (see `random_tensor_bytes`). This alone fixed V2-Lite.
  2. V3's exp_probs_b (std 0.1) outweighed the spread of the sigmoid scores: with
     well-spread hidden states the busiest expert still got ~10x the mean load. It is
     written with std 0.01 (a trained bias balances the load, it does not skew it).
  3. Qwen3-30B-A3B has no dense layer or shared expert: the only token-specific branch
     is the routed mixture, ~10x weaker than attention at its widths (k random experts
     averaged with weights that sum to 1), and attention with unit q/k norms averages
     hundreds of earlier tokens, so all tokens converged to the running mean layer by
     layer (a 4-layer file used 34 of 128 experts in its last layer). Its shape writes
     q/k norms of gain 3 (scores ~N(0, 81): each token attends to a few others) and
     routed experts of 2.5x the std (~16x the output): `qk_norm_gain`,
     `routed_expert_gain`. With 2x the std the busiest expert of some of the 48 layers
     reached 3.0x the mean. The tiny shapes keep gain 1: they use all their experts
     already, and stronger experts made the reference comparisons hinge on router
     near-ties (mean |Δlogit| against transformers on Q4_K grew 10x in a try).
Measured with the engine on full-width files (Q4_K, 512 random tokens, two prompts):
DeepSeek-V3 (5 layers) and V2-Lite (27) use every expert in every MoE layer with the
busiest at <= 2.1x and <= 2.4x the mean, Qwen3-30B-A3B (48) every expert at <= 1.8x.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from tqdm import tqdm

from engine.errors import MoeboxError
from engine.tokenizer import BYTE_DECODER

Q = GGMLQuantizationType


@dataclass(frozen=True)
class SynthSpec:
    """Hyperparameters named as in Hugging Face configs."""

    architecture: str  # llama | qwen2 | qwen2moe | qwen3moe | deepseek2
    name: str
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense FFN width
    vocab_size: int = 0  # size of the default byte vocabulary (padded); a given vocabulary keeps its own
    context_length: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tied_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    # MoE
    n_experts: int = 0
    n_experts_used: int = 0
    moe_intermediate_size: int = 0
    n_shared_experts: int = 0
    shared_expert_intermediate_size: int = 0  # qwen2moe
    first_k_dense_replace: int = 0
    scoring_func: str = "softmax"  # softmax | sigmoid
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = False
    n_group: int = 1
    topk_group: int = 1
    # MLA
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    split_kv_b: bool = True  # newer files: attn_k_b + attn_v_b instead of attn_kv_b
    # YaRN
    rope_scaling_factor: float = 1.0
    original_context_length: int = 0
    mscale_all_dim: float = 0.0
    # Llama 3.1 rope scaling ("rope_type": "llama3"), written as the rope_freqs.weight tensor
    llama3_rope_factor: float = 0.0  # 0: none
    llama3_low_freq_factor: float = 1.0
    llama3_high_freq_factor: float = 4.0
    llama3_original_context_length: int = 8192
    # Not in any config: how random weights are drawn where the defaults route every token
    # alike at real widths (see "Routing" in the module docstring).
    qk_norm_gain: float = 1.0  # multiplies attn_q_norm / attn_k_norm: attention scores ~N(0, gain^4)
    routed_expert_gain: float = 1.0  # multiplies the std of the routed experts' matrices


SHAPES: dict[str, SynthSpec] = {
    "tiny-deepseek-v3": SynthSpec(
        architecture="deepseek2",
        name="tiny-deepseek-v3",
        n_layers=4,
        hidden_size=256,
        n_heads=4,
        n_kv_heads=4,
        head_dim=0,
        intermediate_size=512,
        context_length=8192,
        n_experts=16,
        n_experts_used=4,
        moe_intermediate_size=256,
        n_shared_experts=1,
        first_k_dense_replace=1,
        scoring_func="sigmoid",
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        n_group=4,
        topk_group=2,
        q_lora_rank=96,
        kv_lora_rank=64,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
        rope_scaling_factor=4.0,
        original_context_length=2048,
        mscale_all_dim=1.0,
    ),
    "tiny-deepseek-v2": SynthSpec(
        architecture="deepseek2",
        name="tiny-deepseek-v2",
        n_layers=4,
        hidden_size=256,
        n_heads=4,
        n_kv_heads=4,
        head_dim=0,
        intermediate_size=512,
        context_length=4096,
        n_experts=16,
        n_experts_used=4,
        moe_intermediate_size=256,
        n_shared_experts=2,
        first_k_dense_replace=1,
        scoring_func="softmax",
        routed_scaling_factor=1.0,
        norm_topk_prob=False,
        q_lora_rank=0,
        kv_lora_rank=64,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
        split_kv_b=False,
    ),
    "tiny-qwen3moe": SynthSpec(
        architecture="qwen3moe",
        name="tiny-qwen3moe",
        n_layers=4,
        hidden_size=256,
        n_heads=4,
        n_kv_heads=2,
        head_dim=64,
        intermediate_size=0,
        context_length=4096,
        rope_theta=1e6,
        qk_norm=True,
        n_experts=16,
        n_experts_used=4,
        moe_intermediate_size=256,
        norm_topk_prob=True,
    ),
    "tiny-qwen2moe": SynthSpec(
        architecture="qwen2moe",
        name="tiny-qwen2moe",
        n_layers=4,
        hidden_size=256,
        n_heads=4,
        n_kv_heads=2,
        head_dim=64,
        intermediate_size=0,
        context_length=4096,
        rope_theta=1e6,
        attention_bias=True,
        n_experts=16,
        n_experts_used=4,
        moe_intermediate_size=256,
        shared_expert_intermediate_size=512,
    ),
    "tiny-llama": SynthSpec(
        architecture="llama",
        name="tiny-llama",
        n_layers=4,
        hidden_size=256,
        n_heads=4,
        n_kv_heads=2,
        head_dim=64,
        intermediate_size=512,
        context_length=4096,
        rope_theta=1e5,
    ),
    "tiny-llama3": SynthSpec(
        architecture="llama",
        name="tiny-llama3",
        n_layers=4,
        hidden_size=256,
        n_heads=4,
        n_kv_heads=2,
        head_dim=64,
        intermediate_size=512,
        context_length=4096,
        rope_theta=5e5,
        llama3_rope_factor=8.0,
        # short, so that the smooth band of the scaling falls inside a 64-dim head
        llama3_original_context_length=256,
    ),
    # Real widths: for benchmarks on machines that cannot download the real files.
    "deepseek-v3": SynthSpec(
        architecture="deepseek2",
        name="deepseek-v3-synthetic",
        n_layers=61,
        hidden_size=7168,
        n_heads=128,
        n_kv_heads=128,
        head_dim=0,
        intermediate_size=18432,
        vocab_size=129280,
        context_length=163840,
        n_experts=256,
        n_experts_used=8,
        moe_intermediate_size=2048,
        n_shared_experts=1,
        first_k_dense_replace=3,
        scoring_func="sigmoid",
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        n_group=8,
        topk_group=4,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        rope_scaling_factor=40.0,
        original_context_length=4096,
        mscale_all_dim=1.0,
    ),
    # DeepSeek-R1 as the published GGUFs (unsloth/DeepSeek-R1-GGUF, January 2025) lay it out:
    # V3's dimensions with the unsplit attn_kv_b, 1025 tensors. Pair it with a mix of those
    # files (Q4_K_M, UD-Q2_K_XL, UD-IQ1_S) and --sparse to plan R1 without the real file.
    "deepseek-v2-lite": SynthSpec(
        architecture="deepseek2",
        name="deepseek-v2-lite-synthetic",
        n_layers=27,
        hidden_size=2048,
        n_heads=16,
        n_kv_heads=16,
        head_dim=0,
        intermediate_size=10944,
        vocab_size=102400,
        context_length=163840,
        n_experts=64,
        n_experts_used=6,
        moe_intermediate_size=1408,
        n_shared_experts=2,
        first_k_dense_replace=1,
        q_lora_rank=0,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        rope_scaling_factor=40.0,
        original_context_length=4096,
        mscale_all_dim=0.707,
    ),
    "qwen3-30b-a3b": SynthSpec(
        architecture="qwen3moe",
        name="qwen3-30b-a3b-synthetic",
        n_layers=48,
        hidden_size=2048,
        n_heads=32,
        n_kv_heads=4,
        head_dim=128,
        intermediate_size=6144,
        vocab_size=151936,
        context_length=40960,
        rope_theta=1e6,
        qk_norm=True,
        n_experts=128,
        n_experts_used=8,
        moe_intermediate_size=768,
        norm_topk_prob=True,
        qk_norm_gain=3.0,
        routed_expert_gain=2.5,
    ),
}
# DeepSeek-R1 as the published GGUFs (unsloth/DeepSeek-R1-GGUF, January 2025) lay it out:
# V3's dimensions with the unsplit attn_kv_b, 1025 tensors. Pair it with a mix of those
# files (Q4_K_M, UD-Q2_K_XL, UD-IQ1_S) and --sparse to plan R1 without the real file.
SHAPES["deepseek-r1"] = replace(SHAPES["deepseek-v3"], name="deepseek-r1-synthetic", split_kv_b=False)


# --- random blocks with sane scales -------------------------------------------------
# Formats whose quant values are unsigned carry an offset: Q4_0/Q5_0 subtract a fixed 8/16,
# Q4_1/Q5_1 add an f16 min, Q2_K/Q4_K/Q5_K subtract dmin × a 4- or 6-bit min per sub-block,
# and IQ4_NL's 16-value grid is not symmetric (mean -5.9).
# Random bytes in those fields give a block an offset of about its own spread, of the same
# sign in every block: the whole matrix then has a mean of up to 0.8 of its std (Q4_K: 0.46,
# Q2_K: 0.80). Such a matrix adds mean × sum(input) to every output, so the all-ones
# direction grows by ~sqrt(width) × mean/std (≈ 40 for Q4_K at width 7168) in every layer
# until every token's hidden state is that one direction, and every token routes to the same
# experts (measured: 8 of 256 experts used in each MoE layer of a full-width DeepSeek-V3 in
# Q4_K, over 512 tokens). Quantized real weights have no such mean: ggml's quantizers pick the
# mins that centre each (sub-)block, and the scale of Q4_0/Q5_0/IQ4_NL takes the sign of the
# data. The blocks are written the same way: K-quant mins equal the sub-block scales with
# dmin = d × the mean quant value, Q4_1/Q5_1 mins are -d × the mean quant value, and the
# scales of Q4_0/Q5_0/Q8_0/IQ4_NL take a random sign.
@dataclass(frozen=True)
class _BlockScales:
    d: int  # byte offset of the f16 scale "d"
    q_rms: float  # rms of what d multiplies (quant value × sub-block scale): d = std / q_rms
    min_at: int = -1  # byte offset of the f16 min ("m" of Q4_1/Q5_1, "dmin" of the K-quants)
    q_mean: float = 0.0  # mean of the unsigned quant values, which the min cancels
    sub_scales: slice | None = None  # K-quants: the packed sub-block scales and mins
    signed: bool = False  # d takes either sign


_BLOCK_SCALES: dict[Q, _BlockScales] = {
    Q.Q4_0: _BlockScales(0, 8.0, signed=True),
    Q.Q4_1: _BlockScales(0, 4.6, min_at=2, q_mean=7.5),
    Q.Q5_0: _BlockScales(0, 16.0, signed=True),
    Q.Q5_1: _BlockScales(0, 9.2, min_at=2, q_mean=15.5),
    Q.Q8_0: _BlockScales(0, 64.0, signed=True),
    Q.Q2_K: _BlockScales(80, 1.1 * 8.8, min_at=82, q_mean=1.5, sub_scales=slice(0, 16)),
    Q.Q3_K: _BlockScales(108, 4.0 * 16),
    Q.Q4_K: _BlockScales(0, 4.6 * 36.5, min_at=2, q_mean=7.5, sub_scales=slice(4, 16)),
    Q.Q5_K: _BlockScales(0, 9.2 * 36.5, min_at=2, q_mean=15.5, sub_scales=slice(4, 16)),
    Q.Q6_K: _BlockScales(208, 32.0 * 64),
    Q.IQ2_XXS: _BlockScales(0, 8.0 * 8),
    Q.IQ2_XS: _BlockScales(0, 8.0 * 8),
    Q.IQ2_S: _BlockScales(0, 8.0 * 8),
    Q.IQ3_XXS: _BlockScales(0, 16.0 * 8),
    Q.IQ3_S: _BlockScales(0, 16.0 * 16),
    Q.IQ1_S: _BlockScales(0, 8.0),
    Q.IQ4_NL: _BlockScales(0, 64.0, signed=True),  # its grid of 16 values has a mean of -5.9
    Q.IQ4_XS: _BlockScales(0, 64.0 * 32),
}
_FLOAT_TYPES = {Q.F32: np.float32, Q.F16: np.float16}


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).view(np.uint8).reshape(-1, 2)


def _mins_equal_scales(qtype: Q, packed: np.ndarray) -> None:
    """Set every sub-block min to its sub-block scale, in place (so dmin = d × q_mean centres it)."""
    if qtype == Q.Q2_K:  # one byte per sub-block: scale in the low nibble, min in the high one
        packed[:] = (packed & 0x0F) * 17
        return
    # Q4_K/Q5_K, 12 bytes for 8 six-bit scales and mins: bytes 0-3 hold scales 0-3 (and the top
    # bits of scales 4-7), bytes 4-7 the same for the mins, bytes 8-11 the low nibbles of
    # scales 4-7 (low half) and mins 4-7 (high half).
    packed[:, 4:8] = packed[:, 0:4]
    packed[:, 8:12] = (packed[:, 8:12] & 0x0F) * 17


def random_tensor_bytes(qtype: Q, shape: tuple[int, ...], rng: np.random.Generator, std: float) -> np.ndarray:
    """Random data for a tensor of `shape` (numpy order) in `qtype`, as GGUF stores it: weights
    of about `std`, with no common offset (see above)."""
    if qtype in _FLOAT_TYPES:
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(_FLOAT_TYPES[qtype])
    if qtype == Q.BF16:
        f32 = rng.standard_normal(shape, dtype=np.float32) * std
        return (f32.view(np.uint32) >> 16).astype(np.uint16)
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    if shape[-1] % block_elems:
        raise MoeboxError(
            f"rows of {shape[-1]} values cannot be stored as {qtype.name} (blocks of {block_elems})"
        )
    n_blocks = int(np.prod(shape, dtype=np.int64)) // block_elems
    blocks = (
        np.frombuffer(rng.bytes(n_blocks * block_bytes), dtype=np.uint8).reshape(n_blocks, block_bytes).copy()
    )
    if qtype == Q.IQ1_M:
        # The f16 super-block scale is spread over the top nibbles of four u16 scales.
        d = np.float16(std / 4.0).view(np.uint16)
        scales = blocks[:, 48:56].view(np.uint16)
        for i in range(4):
            scales[:, i] = (scales[:, i] & 0x0FFF) | (((d >> (4 * i)) & 0xF) << 12)
    else:
        try:
            f = _BLOCK_SCALES[qtype]
        except KeyError:
            raise MoeboxError(f"random blocks for {qtype.name} are not supported") from None
        d = std / f.q_rms * rng.uniform(0.5, 1.5, size=n_blocks).astype(np.float32)
        if f.signed:
            d *= rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=n_blocks)
        blocks[:, f.d : f.d + 2] = _f16_bytes(d)
        if f.sub_scales is not None:
            _mins_equal_scales(qtype, blocks[:, f.sub_scales])
            blocks[:, f.min_at : f.min_at + 2] = _f16_bytes(d * f.q_mean)
        elif f.min_at >= 0:
            blocks[:, f.min_at : f.min_at + 2] = _f16_bytes(-d * f.q_mean)
    row_bytes = shape[-1] // block_elems * block_bytes
    return blocks.reshape(*shape[:-1], row_bytes)


# --- tensor plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # numpy order: [..., out, in]
    # "norm" (ones-ish f32), "bias" (small f32), "router" (f32), "router_bias" (f32), "matrix" (qtype),
    # "rope_freqs"
    kind: str
    gain: float = 1.0  # multiplies a matrix's std or a norm's weights


def llama3_rope_factors(spec: SynthSpec) -> np.ndarray:
    """rope_freqs.weight [head_dim / 2] as llama.cpp's converter computes it for a
    Hugging Face config with rope_scaling {"rope_type": "llama3", ...}."""
    dim = spec.head_dim
    freqs = 1.0 / (spec.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = spec.llama3_rope_factor, spec.llama3_low_freq_factor, spec.llama3_high_freq_factor
    old_ctx = spec.llama3_original_context_length
    low_freq_wavelen, high_freq_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for freq in freqs:
        wavelen = 2 * np.pi / freq
        if wavelen < high_freq_wavelen:
            factors.append(1.0)
        elif wavelen > low_freq_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def tensor_plan(spec: SynthSpec, vocab_size: int) -> Iterator[PlannedTensor]:
    """Every tensor of the model, named as llama.cpp's converter names them."""
    h = spec.hidden_size
    if spec.llama3_rope_factor:
        yield PlannedTensor("rope_freqs.weight", (spec.head_dim // 2,), "rope_freqs")
    yield PlannedTensor("token_embd.weight", (vocab_size, h), "matrix")
    for i in range(spec.n_layers):
        p = f"blk.{i}."
        yield PlannedTensor(p + "attn_norm.weight", (h,), "norm")
        yield from _attention_plan(spec, p)
        yield PlannedTensor(p + "ffn_norm.weight", (h,), "norm")
        moe_layer = spec.n_experts > 0 and i >= spec.first_k_dense_replace
        if not moe_layer:
            f = spec.intermediate_size
            yield PlannedTensor(p + "ffn_gate.weight", (f, h), "matrix")
            yield PlannedTensor(p + "ffn_up.weight", (f, h), "matrix")
            yield PlannedTensor(p + "ffn_down.weight", (h, f), "matrix")
            continue
        e, f = spec.n_experts, spec.moe_intermediate_size
        yield PlannedTensor(p + "ffn_gate_inp.weight", (e, h), "router")
        if spec.scoring_func == "sigmoid":
            yield PlannedTensor(p + "exp_probs_b.bias", (e,), "router_bias")
        yield PlannedTensor(p + "ffn_gate_exps.weight", (e, f, h), "matrix", spec.routed_expert_gain)
        yield PlannedTensor(p + "ffn_up_exps.weight", (e, f, h), "matrix", spec.routed_expert_gain)
        yield PlannedTensor(p + "ffn_down_exps.weight", (e, h, f), "matrix", spec.routed_expert_gain)
        shared = spec.n_shared_experts * f or spec.shared_expert_intermediate_size
        if shared:
            if spec.architecture == "qwen2moe":
                yield PlannedTensor(p + "ffn_gate_inp_shexp.weight", (h,), "router")
            yield PlannedTensor(p + "ffn_gate_shexp.weight", (shared, h), "matrix")
            yield PlannedTensor(p + "ffn_up_shexp.weight", (shared, h), "matrix")
            yield PlannedTensor(p + "ffn_down_shexp.weight", (h, shared), "matrix")
    yield PlannedTensor("output_norm.weight", (h,), "norm")
    if not spec.tied_embeddings:
        yield PlannedTensor("output.weight", (vocab_size, h), "matrix")


def _attention_plan(spec: SynthSpec, p: str) -> Iterator[PlannedTensor]:
    h, nh = spec.hidden_size, spec.n_heads
    if spec.architecture == "deepseek2":
        qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        if spec.q_lora_rank:
            yield PlannedTensor(p + "attn_q_a.weight", (spec.q_lora_rank, h), "matrix")
            yield PlannedTensor(p + "attn_q_a_norm.weight", (spec.q_lora_rank,), "norm")
            yield PlannedTensor(p + "attn_q_b.weight", (nh * qk, spec.q_lora_rank), "matrix")
        else:
            yield PlannedTensor(p + "attn_q.weight", (nh * qk, h), "matrix")
        kv = spec.kv_lora_rank
        yield PlannedTensor(p + "attn_kv_a_mqa.weight", (kv + spec.qk_rope_head_dim, h), "matrix")
        yield PlannedTensor(p + "attn_kv_a_norm.weight", (kv,), "norm")
        if spec.split_kv_b:
            yield PlannedTensor(p + "attn_k_b.weight", (nh, kv, spec.qk_nope_head_dim), "matrix")
            yield PlannedTensor(p + "attn_v_b.weight", (nh, spec.v_head_dim, kv), "matrix")
        else:
            yield PlannedTensor(
                p + "attn_kv_b.weight", (nh * (spec.qk_nope_head_dim + spec.v_head_dim), kv), "matrix"
            )
        yield PlannedTensor(p + "attn_output.weight", (h, nh * spec.v_head_dim), "matrix")
        return
    hd, nkv = spec.head_dim, spec.n_kv_heads
    yield PlannedTensor(p + "attn_q.weight", (nh * hd, h), "matrix")
    yield PlannedTensor(p + "attn_k.weight", (nkv * hd, h), "matrix")
    yield PlannedTensor(p + "attn_v.weight", (nkv * hd, h), "matrix")
    if spec.attention_bias:
        yield PlannedTensor(p + "attn_q.bias", (nh * hd,), "bias")
        yield PlannedTensor(p + "attn_k.bias", (nkv * hd,), "bias")
        yield PlannedTensor(p + "attn_v.bias", (nkv * hd,), "bias")
    if spec.qk_norm:
        yield PlannedTensor(p + "attn_q_norm.weight", (hd,), "norm", spec.qk_norm_gain)
        yield PlannedTensor(p + "attn_k_norm.weight", (hd,), "norm", spec.qk_norm_gain)
    yield PlannedTensor(p + "attn_output.weight", (h, nh * hd), "matrix")


# --- tensor-type mixes of published files ---------------------------------------------------
# A mix gives each matrix the type a published quantization gave it: ordered (regex on the
# tensor name, type) rules, the first match wins, `default` for the rest. Norms, routers and
# biases stay F32 (no quantizer touches them), as do matrices whose rows do not fit the
# type's blocks (as for a plain qtype; the published DeepSeek-R1 files have no such rows).
TypeRules = list[tuple[str, Q]]


@dataclass(frozen=True)
class QuantMix:
    name: str
    file_type: gguf.LlamaFileType  # general.file_type of the published file
    default: Q
    rules: Callable[[SynthSpec], TypeRules]

    def type_rules(self, spec: SynthSpec) -> list[tuple[re.Pattern, Q]]:
        return [(re.compile(pattern), qtype) for pattern, qtype in self.rules(spec)]


def _layers(layers) -> str:
    return "(" + "|".join(str(i) for i in layers) + ")"


def _q4_k_m(spec: SynthSpec) -> TypeRules:
    """llama.cpp's Q4_K_M (llama_tensor_get_type in src/llama-quant.cpp of ggml-org/llama.cpp,
    as of the January 2025 releases that made unsloth/DeepSeek-R1-GGUF's Q4_K_M): Q4_K
    everywhere, but Q6_K for output.weight and, in the layers where `use_more_bits(i, n)`
    (i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2), for every ffn_down tensor (dense, shared and
    routed: MoE models take the layer from the name, n = block count) and attn_v. attn_kv_b
    was not yet counted as attn_v then (later releases make it Q6_K in those layers too).
    Published R1 file: 361 F32, 606 Q4_K, 58 Q6_K tensors, 376.650 GiB of tensor data
    (a llama.cpp load log of DeepSeek-R1-Q4_K_M-00001-of-00009.gguf)."""
    n = spec.n_layers
    more = [i for i in range(n) if i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2]
    return [
        (r"^output\.weight$", Q.Q6_K),
        (rf"^blk\.{_layers(more)}\.(ffn_down|attn_v\.weight)", Q.Q6_K),
    ]


def _unsloth_dynamic(spec: SynthSpec, exps: Q, down_exps: Q, first_downs: int, shexp_gate_up: Q) -> TypeRules:
    """Unsloth's dynamic DeepSeek-R1 quants (unsloth/DeepSeek-R1-GGUF, UD-*; blog "Run DeepSeek
    R1 Dynamic 1.58-bit", unsloth.ai/blog/deepseekr1-dynamic, January 2025): routed experts at
    1.5-2.5 bits, the down_proj of the first MoE layers higher ("2.06/1.56bit" for IQ1_S,
    "3.5/2.5bit" for Q2_K_XL), everything else at 4 or 6 bits.
    Which non-expert tensor gets 4 and which 6 bits is not listed there; this table is the one
    assignment by role that matches both published type counts and sizes to the byte count
    shown: Q6_K for attn_kv_a_mqa, attn_kv_b, ffn_down_shexp, the dense layers' ffn_down and
    output.weight (3 x 61 + 58 + 3 + 1 = 184, as in both files); Q4_K for attn_q_a, attn_q_b,
    attn_output, the dense ffn_gate/ffn_up and token_embd; the shared experts' gate/up at Q4_K
    (Q2_K_XL) or Q5_K (IQ1_S: its 116 Q5_K tensors). Attention output at 6 bits instead would
    add 1.8 GB to both files."""
    moe = spec.first_k_dense_replace
    return [
        (r"^output\.weight$", Q.Q6_K),
        (r"\.(attn_kv_a_mqa|attn_kv_b|attn_k_b|attn_v_b)\.", Q.Q6_K),
        (r"\.ffn_down(_shexp)?\.", Q.Q6_K),
        (r"\.ffn_(gate|up)_shexp\.", shexp_gate_up),
        (rf"^blk\.{_layers(range(moe, moe + first_downs))}\.ffn_down_exps\.", down_exps),
        (r"\.ffn_(gate|up|down)_exps\.", exps),
    ]


MIXES: dict[str, QuantMix] = {
    "Q4_K_M": QuantMix("Q4_K_M", gguf.LlamaFileType.MOSTLY_Q4_K_M, Q.Q4_K, _q4_k_m),
    # Published: 361 F32, 171 Q2_K, 3 Q3_K, 306 Q4_K, 184 Q6_K (a llama.cpp load log of
    # DeepSeek-R1-UD-Q2_K_XL-00001-of-00005.gguf in ikawrakow/ik_llama.cpp pull request 259),
    # parts of 49.8 + 50 + 50 + 50 + 26.8 GB on Hugging Face.
    "UD-Q2_K_XL": QuantMix(
        "UD-Q2_K_XL",
        gguf.LlamaFileType.MOSTLY_Q2_K,
        Q.Q4_K,
        lambda spec: _unsloth_dynamic(spec, Q.Q2_K, Q.Q3_K, 3, Q.Q4_K),
    ),
    # Published: 361 F32, 190 Q4_K, 116 Q5_K, 184 Q6_K, 6 IQ2_XXS, 168 IQ1_S, 130.60 GiB (a
    # llama.cpp load log of DeepSeek-R1-UD-IQ1_S in gpustack/gpustack issue 1107).
    "UD-IQ1_S": QuantMix(
        "UD-IQ1_S",
        gguf.LlamaFileType.MOSTLY_IQ1_S,
        Q.Q4_K,
        lambda spec: _unsloth_dynamic(spec, Q.IQ1_S, Q.IQ2_XXS, 6, Q.Q5_K),
    ),
}


def _tensor_types(spec: SynthSpec, plan: list[PlannedTensor], qtype: Q | QuantMix) -> list[Q]:
    """The type of every planned tensor: `qtype` (or the mix's choice) for matrices whose rows
    fit its blocks, F32 for everything else."""
    rules = qtype.type_rules(spec) if isinstance(qtype, QuantMix) else []
    types = []
    for t in plan:
        if t.kind != "matrix":
            types.append(Q.F32)
            continue
        want = qtype.default if isinstance(qtype, QuantMix) else qtype
        want = next((q for pattern, q in rules if pattern.search(t.name)), want)
        types.append(want if t.shape[-1] % GGML_QUANT_SIZES[want][0] == 0 else Q.F32)
    return types


def _file_type(qtype: Q | QuantMix) -> gguf.LlamaFileType:
    if isinstance(qtype, QuantMix):
        return qtype.file_type
    if qtype == Q.F32:
        return gguf.LlamaFileType.ALL_F32
    # a file of one K-quant is what llama.cpp's --pure gives for the _M mix
    for name in (f"MOSTLY_{qtype.name}", f"MOSTLY_{qtype.name}_M"):
        if name in gguf.LlamaFileType.__members__:
            return gguf.LlamaFileType[name]
    return gguf.LlamaFileType.GUESSED


def resolve_qtype(qtype: Q | str) -> Q | QuantMix:
    """A ggml type (by name or value) or the name of a published mix (MIXES)."""
    if not isinstance(qtype, str):
        return qtype
    if qtype.upper() in {m.upper() for m in MIXES}:
        return next(m for name, m in MIXES.items() if name.upper() == qtype.upper())
    try:
        return Q[qtype.upper()]
    except KeyError:
        raise MoeboxError(
            f"unknown quant type {qtype!r}; give a ggml type (F32, Q8_0, Q4_K, IQ1_S, ...) or a mix "
            f"of published files ({', '.join(MIXES)})"
        ) from None


# --- metadata ------------------------------------------------------------------------------


def _write_hparams(
    w: gguf.GGUFWriter, spec: SynthSpec, vocab_size: int, file_type: gguf.LlamaFileType
) -> None:
    w.add_name(spec.name)
    w.add_block_count(spec.n_layers)
    w.add_context_length(spec.context_length)
    w.add_embedding_length(spec.hidden_size)
    w.add_feed_forward_length(spec.intermediate_size)
    w.add_head_count(spec.n_heads)
    w.add_layer_norm_rms_eps(spec.rms_norm_eps)
    w.add_rope_freq_base(spec.rope_theta)
    w.add_vocab_size(vocab_size)
    w.add_file_type(int(file_type))
    if spec.architecture == "deepseek2":
        # MLA is written as MQA with large heads, as llama.cpp's converter does.
        w.add_head_count_kv(1 if spec.split_kv_b else spec.n_heads)
        if spec.q_lora_rank:
            w.add_q_lora_rank(spec.q_lora_rank)
        w.add_kv_lora_rank(spec.kv_lora_rank)
        qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        if spec.split_kv_b:
            w.add_key_length(spec.kv_lora_rank + spec.qk_rope_head_dim)
            w.add_value_length(spec.kv_lora_rank)
            w.add_key_length_mla(qk)
            w.add_value_length_mla(spec.v_head_dim)
        else:
            w.add_key_length(qk)
            w.add_value_length(spec.v_head_dim)
        w.add_rope_dimension_count(spec.qk_rope_head_dim)
        w.add_leading_dense_block_count(spec.first_k_dense_replace)
        w.add_expert_shared_count(spec.n_shared_experts)
        w.add_expert_weights_scale(spec.routed_scaling_factor)
        w.add_expert_weights_norm(spec.norm_topk_prob)
        w.add_expert_gating_func(
            gguf.ExpertGatingFuncType.SIGMOID
            if spec.scoring_func == "sigmoid"
            else gguf.ExpertGatingFuncType.SOFTMAX
        )
        if spec.n_group > 1:
            w.add_expert_group_count(spec.n_group)
            w.add_expert_group_used_count(spec.topk_group)
        if spec.rope_scaling_factor > 1.0:
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(spec.rope_scaling_factor)
            w.add_rope_scaling_orig_ctx_len(spec.original_context_length)
            w.add_rope_scaling_yarn_log_mul(0.1 * spec.mscale_all_dim)
    else:
        w.add_head_count_kv(spec.n_kv_heads)
        w.add_rope_dimension_count(spec.head_dim)
        if (
            spec.architecture in ("qwen3moe", "qwen2moe", "llama", "qwen2")
            and spec.head_dim * spec.n_heads != spec.hidden_size
        ):
            w.add_key_length(spec.head_dim)
            w.add_value_length(spec.head_dim)
    if spec.n_experts:
        w.add_expert_count(spec.n_experts)
        w.add_expert_used_count(spec.n_experts_used)
        w.add_expert_feed_forward_length(spec.moe_intermediate_size)
        if spec.shared_expert_intermediate_size:
            w.add_expert_shared_feed_forward_length(spec.shared_expert_intermediate_size)


def write_byte_vocab(w: gguf.GGUFWriter, size: int = 0) -> int:
    """A minimal real byte-level BPE vocabulary (256 byte tokens, a few merges, BOS/EOS),
    padded with unused `[PAD{i}]` tokens up to `size` as llama.cpp's converter pads.
    Used when no Hugging Face tokenizer is given; returns the vocabulary size."""
    merges = ["t h", "h e", "i n", "e r", "a n", "Ġ t", "Ġ a", "o n"]
    byte_chars = {b: c for c, b in BYTE_DECODER.items()}
    tokens = [byte_chars[b] for b in range(256)] + [m.replace(" ", "") for m in merges]
    types = [gguf.TokenType.NORMAL] * len(tokens) + [gguf.TokenType.CONTROL] * 2
    tokens += ["<|bos|>", "<|eos|>"]
    bos, eos = len(tokens) - 2, len(tokens) - 1
    pad = max(0, size - len(tokens))
    tokens += [f"[PAD{i}]" for i in range(len(tokens), len(tokens) + pad)]
    types += [gguf.TokenType.UNUSED] * pad
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)  # GGUFWriter drops empty arrays; a BPE vocabulary needs some merges
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(True)
    return len(tokens)


VocabWriter = Callable[[gguf.GGUFWriter], int]


def write_synthetic_gguf(
    path: str | Path,
    spec: SynthSpec | str,
    *,
    qtype: Q | str = Q.F32,
    vocab: VocabWriter | None = None,
    seed: int = 0,
    std: float = 0.02,
    split_max_size: int = 0,
    sparse: bool = False,
    progress: bool = False,
    **overrides: object,
) -> Path:
    """Write a random-weight model GGUF; returns the path of the (first) file.

    `qtype` is a ggml type for every 2-D+ matrix, or the name of a published mix (MIXES:
    Q4_K_M, UD-Q2_K_XL, UD-IQ1_S) that types each matrix as that file does. Matrices whose
    rows do not fit the type's blocks fall back to F32 (as llama.cpp's quantizer falls back
    for small rows); norms, biases and routers stay F32. `vocab` writes the tokenizer keys
    and returns the vocab size (default: a byte-level vocabulary padded to the shape's
    vocab_size). `split_max_size` > 0 writes a split set. `sparse` writes the headers and
    metadata only and leaves the tensor data a hole of its full size (a sparse file: no disk
    used, reads as zeros), for planning a model's memory from its headers.
    """
    if isinstance(spec, str):
        try:
            spec = SHAPES[spec]
        except KeyError:
            raise MoeboxError(f"unknown shape {spec!r}; known shapes: {', '.join(SHAPES)}") from None
    if overrides:
        spec = replace(spec, **overrides)
    qtype = resolve_qtype(qtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, spec.architecture, split_max_size=split_max_size)
    # The embedding has exactly as many rows as the vocabulary has tokens (llama.cpp refuses
    # a file where they differ); the shape's vocab_size only sizes the default vocabulary.
    vocab_size = vocab(w) if vocab else write_byte_vocab(w, spec.vocab_size)
    _write_hparams(w, spec, vocab_size, _file_type(qtype))

    plan = list(tensor_plan(spec, vocab_size))
    types = _tensor_types(spec, plan, qtype)
    for t, ttype in zip(plan, types, strict=True):
        block_e, block_b = GGML_QUANT_SIZES[ttype]
        n_bytes = int(np.prod(t.shape, dtype=np.int64)) // block_e * block_b
        byte_shape = (*t.shape[:-1], t.shape[-1] // block_e * block_b) if block_e > 1 else t.shape
        w.add_tensor_info(
            t.name, byte_shape, np.dtype(np.uint8) if block_e > 1 else _dtype_of(ttype), n_bytes, ttype
        )

    w.write_header_to_file(path=path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    if sparse:
        _leave_data_as_holes(w)
    else:
        bar = tqdm(
            list(zip(plan, types, strict=True)),
            desc=f"writing {path.name}",
            unit="tensor",
            disable=not progress,
        )
        for t, ttype in bar:
            w.write_tensor_data(_tensor_data(spec, t, ttype, rng, std))
    w.close()
    if split_max_size:
        return path.with_name(f"{path.stem}-00001-of-{len(w.tensors):05d}.gguf")
    return path


def _tensor_data(
    spec: SynthSpec, t: PlannedTensor, ttype: Q, rng: np.random.Generator, std: float
) -> np.ndarray:
    if t.kind == "rope_freqs":
        return llama3_rope_factors(spec)
    if t.kind == "norm":
        return (t.gain * (1.0 + 0.1 * rng.standard_normal(t.shape))).astype(np.float32)
    if t.kind == "bias":
        return (0.1 * rng.standard_normal(t.shape)).astype(np.float32)
    if t.kind == "router":
        return (rng.standard_normal(t.shape) / np.sqrt(t.shape[-1])).astype(np.float32)
    if t.kind == "router_bias":
        # V3's exp_probs_b is added to sigmoid scores whose spread over tokens is ~0.2 (the
        # router's logits have a std of ~1): a bias of std 0.1 moved the busiest of 256
        # experts to 10x the mean load even with well-spread hidden states. A trained bias
        # balances the load, so here it stays small enough not to unbalance it (~2.4x at 0.01).
        return (0.01 * rng.standard_normal(t.shape)).astype(np.float32)
    return random_tensor_bytes(
        ttype, t.shape, rng, t.gain * (std if ttype != Q.F32 else 1.0 / np.sqrt(t.shape[-1]))
    )


def _leave_data_as_holes(w: gguf.GGUFWriter) -> None:
    """Extend each file to its full size without writing its tensor data: the data section
    starts at the next alignment boundary after the tensor infos, and each tensor takes its
    size padded to the alignment (as GGUFWriter.write_tensor_data lays them out)."""
    for fout, tensors in zip(w.fout, w.tensors, strict=True):
        start = gguf.GGUFWriter.ggml_pad(fout.tell(), w.data_alignment)
        size = sum(gguf.GGUFWriter.ggml_pad(ti.nbytes, w.data_alignment) for ti in tensors.values())
        fout.flush()
        fout.truncate(start + size)


def _dtype_of(ttype: Q) -> np.dtype:
    return {Q.F32: np.dtype(np.float32), Q.F16: np.dtype(np.float16), Q.BF16: np.dtype(np.uint16)}[ttype]


def unpermute_llama_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's converter permutation of llama q/k rows ([out, in])."""
    out, inp = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)
