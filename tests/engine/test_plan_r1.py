"""The memory plan of full DeepSeek-R1 shapes, checked against hand arithmetic from R1's
dimensions (README: non-expert 17.1 B parameters; MLA cache 61 x (512 + 64) x 2 bytes per token).

The tensor records are built in memory with R1's real names and shapes (engine/tools/synth.py's
deepseek-v3 plan) and a Q4_K_M-like choice of types: Q4_K matrices, Q6_K for ffn_down*,
attn_kv_a_mqa and output (as llama.cpp's Q4_K_M keeps its most sensitive tensors at 6 bits),
F32 norms and routers. No file is written; the plan reads headers only anyway."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from engine.config import MLAConfig, MLALayout, ModelConfig, MoEConfig
from engine.gguf_file import TensorInfo
from engine.placement import user_rules
from engine.plan import MachineMemory, plan_memory
from engine.tools.synth import SHAPES, tensor_plan

Q = GGMLQuantizationType
GiB = 2**30

LAYERS, DENSE, HIDDEN, VOCAB = 61, 3, 7168, 129280
HEADS, Q_LORA, KV_LORA, NOPE, ROPE, V_DIM = 128, 1536, 512, 128, 64, 128
DENSE_FFN, EXPERTS, EXPERT_FFN = 18432, 256, 2048
MOE = LAYERS - DENSE


def r1_work_bytes(ctx: int) -> int:
    """R1's work buffers by hand: a step of 256 + 32 rows (residual, q, the dense FFN's rows; f32),
    32 rows of logits, per context token the f16 latent widened to f32 and a mask byte per chunk
    token, and MLA's keys/values of 4 heads at a time (256 MiB // (32768 x 448 x 4 bytes) = 4)."""
    return (
        (256 + 32) * (4 * HIDDEN + 2 * HEADS * (NOPE + ROPE) + 4 * DENSE_FFN) * 4
        + 32 * VOCAB * 4
        + ctx * ((KV_LORA + ROPE) * 4 + 256)
        + 4 * ctx * (2 * NOPE + V_DIM + ROPE) * 4
    )


R1 = ModelConfig(
    architecture="deepseek2",
    name="DeepSeek-R1",
    n_layers=LAYERS,
    hidden_size=HIDDEN,
    n_heads=HEADS,
    n_kv_heads=HEADS,
    head_dim=NOPE + ROPE,
    ffn_dim=DENSE_FFN,
    vocab_size=VOCAB,
    context_length=163840,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    rope_dim=ROPE,
    moe=MoEConfig(EXPERTS, 8, EXPERT_FFN, n_shared_experts=1, leading_dense_blocks=DENSE),
    mla=MLAConfig(Q_LORA, KV_LORA, NOPE, ROPE, V_DIM, MLALayout.K_B_V_B),
)


def q4_k_m(name: str, kind: str) -> Q:
    if kind != "matrix":
        return Q.F32
    if "ffn_down" in name or "attn_kv_a_mqa" in name or name == "output.weight":
        return Q.Q6_K
    if "attn_k_b" in name or "attn_v_b" in name:
        return Q.Q8_0
    return Q.Q4_K


class Headers:
    """What plan_memory reads of a GGUFModel: the tensor records."""

    def __init__(self, qtype):
        self.tensors = {}
        for p in tensor_plan(SHAPES["deepseek-v3"], VOCAB):
            t = qtype(p.name, p.kind)
            values, block = GGML_QUANT_SIZES[t]
            n_bytes = int(np.prod(p.shape)) // values * block
            self.tensors[p.name] = TensorInfo(p.name, t, p.shape, n_bytes, Path("r1.gguf"), 0)

    def __iter__(self):
        return iter(self.tensors.values())

    def __contains__(self, name):
        return name in self.tensors

    def tensor(self, name):
        return self.tensors[name]


@pytest.fixture(scope="module")
def r1():
    return Headers(q4_k_m)


def test_r1_parameters_by_hand(r1):
    experts = sum(t.n_elements for t in r1 if "_exps" in t.name)
    assert experts == MOE * EXPERTS * 3 * HIDDEN * EXPERT_FFN == 653_908_770_816
    rest = sum(t.n_elements for t in r1 if "_exps" not in t.name)
    assert round(rest / 1e9, 1) == 17.1


def test_r1_q4_k_m_at_32k_with_every_expert_in_ram(r1):
    ctx = 32768
    p = plan_memory(
        r1,
        R1,
        rules=user_rules([("--cpu-moe", None)]),
        memory=MachineMemory(24 * GiB, 512 * GiB),
        context=ctx,
        native=True,
    )
    # by hand: GPU bytes per value of each type as engine/gpu holds it
    q4k, q6k, bf16, f32 = 148 / 256, 210 / 256, 2, 4
    attn_q4 = Q_LORA * HIDDEN + HEADS * (NOPE + ROPE) * Q_LORA + HIDDEN * HEADS * V_DIM  # q_a, q_b, o
    attn_q6 = (KV_LORA + ROPE) * HIDDEN  # kv_a_mqa
    k_b_v_b = HEADS * KV_LORA * NOPE + HEADS * V_DIM * KV_LORA
    norms = HIDDEN + Q_LORA + KV_LORA + HIDDEN
    shared = EXPERT_FFN * HIDDEN  # one shared expert: gate, up (Q4_K), down (Q6_K)
    weights = (
        LAYERS * (attn_q4 * q4k + attn_q6 * q6k + k_b_v_b * bf16 + norms * f32)
        + DENSE * DENSE_FFN * HIDDEN * (2 * q4k + q6k)
        + MOE * (shared * (2 * q4k + q6k) + (EXPERTS * HIDDEN + EXPERTS) * f32)  # + router, bias
        + VOCAB * HIDDEN * q6k  # output head
        + HIDDEN * f32  # output norm
    )
    assert p.weight_bytes("cuda") == weights
    # the embedding is read by rows from RAM; every routed expert stays there in its blocks
    assert (
        p.weight_bytes("cpu")
        == VOCAB * HIDDEN // 256 * 144 + MOE * EXPERTS * EXPERT_FFN * HIDDEN * (2 * 144 + 210) // 256
    )
    # MLA cache: 61 x (512 + 64) values x 2 bytes (f16 on the GPU) = 70,272 bytes per token
    assert p.kv_dtype == "f16" and p.kv_per_token == LAYERS * (KV_LORA + ROPE) * 2 == 70_272
    assert p.kv_bytes == 70_272 * ctx
    work = r1_work_bytes(ctx)
    assert p.work_bytes == work
    assert p.vram_need == weights + 70_272 * ctx + work
    print(
        f"R1 Q4_K_M-like, 32K: weights {weights / GiB:.2f} GiB, KV {70_272 * ctx / GiB:.2f} GiB, "
        f"work {work / GiB:.2f} GiB: VRAM {p.vram_need / GiB:.2f} GiB"
    )
    assert p.vram_need <= 20 * GiB  # the target: a 24 GB card holds it, with 32K of context
    assert p.fits_vram
