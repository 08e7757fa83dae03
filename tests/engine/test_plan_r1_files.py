"""The plan of DeepSeek-R1 files as published (sparse files with R1's real headers and the tensor
types of unsloth/DeepSeek-R1-GGUF's Q4_K_M, UD-Q2_K_XL and UD-IQ1_S: `moebox synth deepseek-r1 OUT
--sparse --qtype MIX`), against hand arithmetic from R1's dimensions and each file's types
(engine/tools/synth.py MIXES says which tensor has which type and where that comes from).

Targets: with every routed expert in RAM and 32K tokens of context, R1 Q4_K_M needs at most
20 GiB of VRAM and UD-IQ1_S at most 14 GiB (a 16 GB card)."""

from __future__ import annotations

import pytest
from test_plan_r1 import (  # R1's dimensions and work buffers, by hand
    DENSE,
    DENSE_FFN,
    EXPERT_FFN,
    EXPERTS,
    HEADS,
    HIDDEN,
    KV_LORA,
    LAYERS,
    MOE,
    NOPE,
    Q_LORA,
    ROPE,
    V_DIM,
    VOCAB,
    r1_work_bytes,
)

from engine.config import model_config
from engine.gguf_file import open_gguf
from engine.placement import user_rules
from engine.plan import MIN_CONTEXT, MachineMemory, plan_memory
from engine.tools.synth import write_synthetic_gguf

GiB = 2**30
CTX = 32768

# values of each matrix (R1 files carry the unsplit attn_kv_b)
Q_A, Q_B = Q_LORA * HIDDEN, HEADS * (NOPE + ROPE) * Q_LORA
KV_A, KV_B = (KV_LORA + ROPE) * HIDDEN, HEADS * (NOPE + V_DIM) * KV_LORA
ATTN_OUT = HIDDEN * HEADS * V_DIM
DENSE_MAT, SHARED_MAT, EXPERT_MAT = DENSE_FFN * HIDDEN, EXPERT_FFN * HIDDEN, EXPERTS * EXPERT_FFN * HIDDEN
HEAD = VOCAB * HIDDEN  # token_embd and output

# bytes per value: in the file (and RAM), and as engine/gpu holds the blocks in VRAM
FILE = {"Q2_K": 84 / 256, "Q3_K": 110 / 256, "Q4_K": 144 / 256, "Q5_K": 176 / 256, "Q6_K": 210 / 256}
FILE |= {"IQ1_S": 50 / 256, "IQ2_XXS": 66 / 256}
VRAM = {"Q4_K": 148 / 256, "Q5_K": 180 / 256, "Q6_K": 210 / 256}

# llama.cpp's Q4_K_M puts ffn_down at Q6_K in the use_more_bits layers: i < 61/8, i >= 7*61/8,
# or (i - 7) % 3 == 2; of the MoE layers 3-60 that is 3-6, 53-60 and 9, 12, ..., 51: 27 layers
MORE = [i for i in range(LAYERS) if i < 7 or i >= 53 or (i - 7) % 3 == 2]
MORE_MOE = sum(1 for i in MORE if i >= DENSE)
assert MORE_MOE == 27


def by_hand(mix: str) -> tuple[float, float]:
    """(VRAM weight bytes with every routed expert in RAM, RAM bytes) of an R1 file."""
    if mix == "Q4_K_M":
        # Q4_K everywhere but output and the ffn_down of the MORE layers (dense, shared, routed)
        gguf_vram = VRAM["Q4_K"] * (
            LAYERS * (Q_A + Q_B + KV_A + ATTN_OUT)
            + DENSE * 2 * DENSE_MAT
            + MOE * 2 * SHARED_MAT
            + (MOE - MORE_MOE) * SHARED_MAT
        ) + VRAM["Q6_K"] * (HEAD + DENSE * DENSE_MAT + MORE_MOE * SHARED_MAT)
        kv_b = "Q4_K"
        experts = EXPERT_MAT * (
            MOE * 2 * FILE["Q4_K"] + MORE_MOE * FILE["Q6_K"] + (MOE - MORE_MOE) * FILE["Q4_K"]
        )
    else:
        # Unsloth's dynamic quants: Q6_K for kv_a_mqa, kv_b, every non-routed ffn_down and output;
        # Q4_K for q_a, q_b, attn_output and the dense gate/up; shared gate/up at Q4_K (Q2_K_XL) or
        # Q5_K (IQ1_S); routed experts Q2_K / IQ1_S with the down of the first 3 / 6 MoE layers at
        # Q3_K / IQ2_XXS
        shared_gate_up, exps, down, first = {
            "UD-Q2_K_XL": ("Q4_K", "Q2_K", "Q3_K", 3),
            "UD-IQ1_S": ("Q5_K", "IQ1_S", "IQ2_XXS", 6),
        }[mix]
        gguf_vram = (
            VRAM["Q4_K"] * (LAYERS * (Q_A + Q_B + ATTN_OUT) + DENSE * 2 * DENSE_MAT)
            + VRAM[shared_gate_up] * MOE * 2 * SHARED_MAT
            + VRAM["Q6_K"] * (LAYERS * KV_A + HEAD + DENSE * DENSE_MAT + MOE * SHARED_MAT)
        )
        kv_b = "Q6_K"
        experts = EXPERT_MAT * (MOE * 2 * FILE[exps] + first * FILE[down] + (MOE - first) * FILE[exps])
    del kv_b  # attn_kv_b is used dense by MLA: bf16 on the GPU whatever its type in the file
    bf16 = 2 * LAYERS * KV_B
    f32 = 4 * (
        LAYERS * (HIDDEN + Q_LORA + KV_LORA + HIDDEN)  # attn_norm, q_a_norm, kv_a_norm, ffn_norm
        + HIDDEN  # output_norm
        + MOE * (EXPERTS * HIDDEN + EXPERTS)  # router and its bias
    )
    ram = experts + HEAD * FILE["Q4_K"]  # routed experts and the embedding read by rows
    return gguf_vram + bf16 + f32, ram


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("r1")
    return {
        mix: write_synthetic_gguf(d / f"r1-{mix}.gguf", "deepseek-r1", qtype=mix, sparse=True)
        for mix in ("Q4_K_M", "UD-Q2_K_XL", "UD-IQ1_S")
    }


@pytest.mark.parametrize("mix,target_gib", [("Q4_K_M", 20), ("UD-Q2_K_XL", 14), ("UD-IQ1_S", 14)])
def test_r1_plan_at_32k_with_every_expert_in_ram(files, mix, target_gib):
    with open_gguf(files[mix]) as gguf:
        config = model_config(gguf)
        p = plan_memory(
            gguf,
            config,
            rules=user_rules([("--cpu-moe", None)]),
            memory=MachineMemory(24 * GiB, 512 * GiB, "--vram 24", "--ram 512"),
            context=CTX,
        )
    weights, ram = by_hand(mix)
    assert p.weight_bytes("cuda") == weights
    assert p.weight_bytes("cpu") == p.ram_need == ram
    # MLA cache: 61 x (512 + 64) values x 2 bytes (f16) per token
    assert p.kv_per_token == 61 * (512 + 64) * 2 == 70_272
    work = r1_work_bytes(CTX)
    assert p.work_bytes == work
    assert p.vram_need == weights + 70_272 * CTX + work
    print(
        f"{mix}: VRAM {p.vram_need / GiB:.2f} GiB (weights {weights / GiB:.2f}, KV {70_272 * CTX / GiB:.2f}, "
        f"work {work / GiB:.2f}), RAM {ram / GiB:.1f} GiB"
    )
    assert p.vram_need <= target_gib * GiB
    assert not p.gpu_expert_bytes()


def test_r1_auto_fit_and_advice(files):
    with open_gguf(files["Q4_K_M"]) as gguf:
        config = model_config(gguf)
        memory = MachineMemory(24 * GiB, 512 * GiB, "--vram 24", "--ram 512")
        # no rule: the last MoE layer's experts (Q4_K gate/up 148, Q6_K down 210 bytes per 256
        # values in VRAM: 6.92 GiB) fit beside 13.4 GiB in a 24 GiB card, two would not
        auto = plan_memory(gguf, config, memory=memory, context=CTX)
        assert auto.gpu_expert_bytes() == {60: EXPERT_MAT * (2 * 148 + 210) // 256}
        assert "--n-cpu-moe 60" in auto.auto_fit
        # every expert on the GPU does not fit; the plan says which --n-cpu-moe does
        all_gpu = plan_memory(
            gguf, config, rules=user_rules([("-ot", "exps=CUDA0")]), memory=memory, context=CTX
        )
        assert not all_gpu.fits_vram
        assert "--n-cpu-moe 60 " in " ".join(all_gpu.advice())
        # the model's own 163,840 tokens of context do not fit 16 GiB: lowered to what does
        small = plan_memory(
            gguf, config, rules=user_rules([("--cpu-moe", None)]), memory=MachineMemory(16 * GiB, 512 * GiB)
        )
        assert small.fits_vram and MIN_CONTEXT <= small.context < config.context_length
        assert small.context % 256 == 0 and "lowered from the model's 163840" in small.context_note
