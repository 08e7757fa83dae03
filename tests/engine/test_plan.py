"""The memory plan from GGUF headers: tensor placement with the user's rules, the automatic fit
of routed experts into free VRAM (last layers first), the KV cache and work buffers at the
context, and the errors that say what to change. A GPU is pretended by its free bytes, so
all of it runs on the CPU."""

from __future__ import annotations

import pytest
from gguf import GGMLQuantizationType

from engine.config import model_config
from engine.errors import InvalidOptionError
from engine.gguf_file import open_gguf
from engine.placement import user_rules
from engine.plan import (
    MIN_CONTEXT,
    PREFILL_CHUNK,
    VRAM_RESERVE,
    InsufficientMemoryError,
    MachineMemory,
    plan_memory,
    work_buffers,
)
from engine.tools.synth import write_synthetic_gguf

Q = GGMLQuantizationType
GiB = 2**30
# tiny-deepseek-v3 in Q4_K: 4 layers (layer 0 dense), 16 experts of 256 x 256 per MoE layer;
# a routed-expert tensor is 16 x 256 x 256 values = 4096 Q4_K blocks of 144 bytes in the file
# (and in RAM), 148 in VRAM (engine/gpu unpacks the 6-bit scales to a byte each).
EXPERT_LAYER_BYTES = 3 * 16 * 256 * 256 // 256 * 144
GPU_EXPERT_LAYER_BYTES = 3 * 4096 * 148
assert EXPERT_LAYER_BYTES == 1_769_472


def q4k_kernel(ggml_type: int) -> bool:
    return ggml_type == Q.Q4_K


@pytest.fixture(scope="module")
def tiny_v3(tmp_path_factory):
    path = write_synthetic_gguf(tmp_path_factory.mktemp("plan") / "v3.gguf", "tiny-deepseek-v3", qtype="Q4_K")
    with open_gguf(path) as gguf:
        yield path, gguf, model_config(gguf)


def plan(tiny, *, vram=None, ram=64 * GiB, flags=(), **kw):
    _, gguf, config = tiny
    return plan_memory(
        gguf,
        config,
        rules=user_rules(flags),
        memory=MachineMemory(vram, ram, "test" if vram else "no GPU", "test"),
        gpu_kernel_for=q4k_kernel,
        native=True,
        **kw,
    )


def test_cpu_only_plan(tiny_v3):
    p = plan(tiny_v3, context=1000)
    assert not p.gpu and p.weight_bytes("cuda") == 0
    _, gguf, _ = tiny_v3
    # every tensor in RAM as the file holds it, except the f32 copies of norms, routers and k_b/v_b
    assert p.weight_bytes("cpu") == sum(4 * t.n_elements if t.ggml_type == Q.F32 else t.n_bytes for t in gguf)
    # MLA cache: 4 layers x (kv_lora 64 + rope 32) values, f32 in RAM
    assert p.kv_dtype == "f32" and p.kv_per_token == 4 * (64 + 32) * 4
    assert p.kv_bytes == 1000 * 1536
    assert p.ram_need == p.weight_bytes("cpu") + p.kv_bytes + p.work_bytes
    assert p.fits_vram and p.fits_ram and not p.auto_fit
    p.raise_if_unfit()


def test_gpu_plan_places_as_the_preset_and_counts_gguf_bytes(tiny_v3):
    p = plan(tiny_v3, vram=64 * GiB, flags=[("--cpu-moe", None)], context=2048)
    by_name = {t.name: t for t in p.tensors}
    assert (by_name["blk.1.ffn_up_exps.weight"].device, by_name["blk.1.ffn_up_exps.weight"].format) == (
        "cpu",
        "native",
    )
    attn_out = by_name["blk.1.attn_output.weight"]  # Q4_K [256, 256]: 256 blocks of 148 bytes in VRAM
    assert (attn_out.device, attn_out.format, attn_out.n_bytes) == ("cuda", "gguf", 256 * 148)
    q_b = by_name["blk.1.attn_q_b.weight"]  # F32 in the file (rows of 96): an f32 tensor on the GPU
    assert (q_b.device, q_b.format, q_b.n_bytes) == ("cuda", "f32", 384 * 96 * 4)
    k_b = by_name["blk.1.attn_k_b.weight"]  # dense for MLA's einsums
    assert (k_b.device, k_b.format, k_b.n_bytes) == ("cuda", "bf16", 4 * 64 * 64 * 2)
    norm = by_name["blk.1.attn_norm.weight"]
    assert (norm.device, norm.format, norm.n_bytes) == ("cuda", "f32", 256 * 4)
    emb = by_name["token_embd.weight"]
    assert (emb.device, emb.format) == ("cpu", "rows")
    # the cache in VRAM is f16: 4 layers x 96 values x 2 bytes
    assert p.kv_dtype == "f16" and p.kv_bytes == 2048 * 4 * 96 * 2
    assert p.vram_need == p.weight_bytes("cuda") + p.kv_bytes + p.work_bytes
    assert p.ram_need == p.weight_bytes("cpu") == sum(t.n_bytes for t in p.tensors if t.device == "cpu")
    assert p.weight_bytes("cpu") == emb.n_bytes + 3 * EXPERT_LAYER_BYTES
    assert p.fits_vram and not p.auto_fit  # a user rule: no automatic fit


def test_auto_fit_puts_the_last_moe_layers_on_the_gpu(tiny_v3):
    base = plan(tiny_v3, vram=64 * GiB, flags=[("--cpu-moe", None)], context=2048)
    # room for the experts of two MoE layers and a little more, not three
    vram = VRAM_RESERVE + base.vram_need + 2 * GPU_EXPERT_LAYER_BYTES + 1000
    p = plan(tiny_v3, vram=vram, context=2048)
    assert p.gpu_expert_bytes() == {2: GPU_EXPERT_LAYER_BYTES, 3: GPU_EXPERT_LAYER_BYTES}
    assert {t.source for t in p.tensors if t.layer in (2, 3) and t.group == "routed experts"} == {"auto-fit"}
    assert all(t.device == "cpu" for t in p.tensors if t.layer == 1 and t.group == "routed experts")
    assert p.vram_need == base.vram_need + 2 * GPU_EXPERT_LAYER_BYTES
    assert p.fits_vram
    assert "2 MoE layers 2-3 (" in p.auto_fit and "--n-cpu-moe 2" in p.auto_fit
    # one byte less than two layers: only the last
    p = plan(tiny_v3, vram=VRAM_RESERVE + base.vram_need + 2 * GPU_EXPERT_LAYER_BYTES - 1, context=2048)
    assert list(p.gpu_expert_bytes()) == [3]
    # plenty: every MoE layer
    p = plan(tiny_v3, vram=64 * GiB, context=2048)
    assert list(p.gpu_expert_bytes()) == [1, 2, 3] and "--n-cpu-moe 1" in p.auto_fit
    # too little for one layer: all in RAM, and the plan says why
    p = plan(tiny_v3, vram=VRAM_RESERVE + base.vram_need + 1000, context=2048)
    assert p.gpu_expert_bytes() == {} and "stay in RAM" in p.auto_fit


def test_n_cpu_moe_that_does_not_fit_says_which_n_does(tiny_v3):
    base = plan(tiny_v3, vram=64 * GiB, flags=[("--cpu-moe", None)], context=2048)
    vram = VRAM_RESERVE + base.vram_need + GPU_EXPERT_LAYER_BYTES + 1000  # one layer's experts fit
    p = plan(tiny_v3, vram=vram, flags=[("--n-cpu-moe", "1")], context=2048)  # asks for layers 1-3
    assert list(p.gpu_expert_bytes()) == [1, 2, 3]
    assert not p.fits_vram
    with pytest.raises(InsufficientMemoryError) as e:
        p.raise_if_unfit()
    msg = str(e.value)
    assert "does not fit the GPU" in msg and "short" in msg
    assert "--n-cpu-moe 3 (routed experts of layers 0-2 in RAM)" in msg
    assert "--cpu-moe" in msg and "--ctx-size" in msg
    assert plan(tiny_v3, vram=vram, flags=[("--n-cpu-moe", "3")], context=2048).fits_vram


def test_context_that_does_not_fit(tiny_v3):
    base = plan(tiny_v3, vram=64 * GiB, flags=[("--cpu-moe", None)], context=2048)
    # 5,000 tokens of context fit: KV cache and work buffers at 5,000 beside the weights
    vram = VRAM_RESERVE + base.weight_bytes("cuda") + base.kv_per_token * 5000 + base.work.at(5000)
    p = plan(tiny_v3, vram=vram, flags=[("--cpu-moe", None)], context=8192)
    assert not p.fits_vram and p.max_context() == 5000
    with pytest.raises(InsufficientMemoryError, match=r"--ctx-size 4864 \(now 8192"):
        p.raise_if_unfit()
    # no context asked: the model's 8192 is lowered to what fits, in steps of 256
    p = plan(tiny_v3, vram=vram, flags=[("--cpu-moe", None)])
    assert p.context == 4864 >= MIN_CONTEXT and p.fits_vram
    assert "lowered from the model's 8192 to 4864" in p.context_note
    # a GPU too small for the weights alone
    p = plan(tiny_v3, vram=VRAM_RESERVE + 1000, flags=[("--cpu-moe", None)])
    with pytest.raises(InsufficientMemoryError, match="a GPU with at least"):
        p.raise_if_unfit()


def test_rule_errors_at_plan_time(tiny_v3):
    with pytest.raises(InvalidOptionError, match="no CUDA GPU"):
        plan(tiny_v3, flags=[("-ot", r"blk\.3\.ffn_.*_exps=CUDA0")])
    with pytest.raises(InvalidOptionError, match="no CUDA GPU"):
        plan(tiny_v3, flags=[("--n-cpu-moe", "2")])  # the rest would go to the GPU
    plan(tiny_v3, flags=[("--cpu-moe", None), ("--n-cpu-moe", "9")])  # nothing asks for a GPU
    with pytest.raises(InvalidOptionError, match=r"layer 3 are split between devices"):
        plan(tiny_v3, vram=64 * GiB, flags=[("-ot", r"blk\.3\.ffn_up_exps=CUDA0")])
    with pytest.raises(InvalidOptionError, match=r"puts blk\.0\.attn_output\.weight in RAM"):
        plan(tiny_v3, vram=64 * GiB, flags=[("-ot", "attn_output=CPU")])
    with pytest.raises(InvalidOptionError, match="--ctx-size 0"):
        plan(tiny_v3, context=0)


def test_tied_output_head_is_planned(tmp_path):
    path = write_synthetic_gguf(tmp_path / "tied.gguf", "tiny-llama", qtype="Q4_K", tied_embeddings=True)
    with open_gguf(path) as gguf:
        config = model_config(gguf)
        p = plan_memory(
            gguf, config, memory=MachineMemory(64 * GiB, 64 * GiB), gpu_kernel_for=q4k_kernel, native=True
        )
        emb = gguf.tensor("token_embd.weight")
    heads = [t for t in p.tensors if t.name == "output.weight"]
    assert len(heads) == 1 and heads[0].group == "output" and heads[0].device == "cuda"
    # the embedding's Q4_K blocks a second time, in VRAM: 148 bytes per block of 256 there
    assert heads[0].n_bytes == emb.n_bytes // 144 * 148
    # GQA cache: 4 layers x 2 x 2 kv heads x 64 x f16
    assert p.kv_per_token == 4 * 2 * 2 * 64 * 2


def test_work_buffers_by_hand(tiny_v3):
    _, _, config = tiny_v3
    w = work_buffers(config, chunk=PREFILL_CHUNK, act_bytes=4, cache_elem=2)
    # per context token: the f16 latent + rope key widened to f32 (96 x 4) and a mask byte per
    # chunk token; keys/values expanded per head: 2 x 64 nope + 64 v + 32 rope values, f32
    assert w.per_context_token == 96 * 4 + 256
    assert (w.heads, w.expanded_values) == (4, 2 * 64 + 64 + 32)
    # 4 heads x 8192 tokens x 224 values x 4 bytes = 28 MiB: all heads in one group
    assert w.expanded(8192) == 4 * 8192 * 224 * 4
    # a step of a 256-token chunk and 32 decode rows: 4 x hidden + 2 x q (4 x 96) + 4 x the
    # widest FFN (512) values per row, f32; 32 rows of logits
    assert w.fixed == (256 + 32) * (4 * 256 + 2 * 384 + 4 * 512) * 4 + 32 * config.vocab_size * 4
    assert w.at(8192) == w.fixed + 8192 * w.per_context_token + w.expanded(8192)


def test_mla_work_buffers_take_heads_in_groups_at_long_contexts():
    from engine.config import MLAConfig, MLALayout, ModelConfig, MoEConfig
    from engine.layers.mla import EXPANDED_BYTES

    r1 = ModelConfig(
        architecture="deepseek2",
        name="r1",
        n_layers=61,
        hidden_size=7168,
        n_heads=128,
        n_kv_heads=128,
        head_dim=192,
        ffn_dim=18432,
        vocab_size=129280,
        context_length=163840,
        rms_norm_eps=1e-6,
        rope_theta=1e4,
        rope_dim=64,
        moe=MoEConfig(256, 8, 2048, n_shared_experts=1, leading_dense_blocks=3),
        mla=MLAConfig(1536, 512, 128, 64, 128, MLALayout.K_B_V_B),
    )
    w = work_buffers(r1)
    per_head_token = (2 * 128 + 128 + 64) * 4  # 1,792 bytes of k_nope, v and k per head and token
    # 32K tokens: one head's keys and values take 56 MiB; 256 MiB hold 4 heads at a time
    assert EXPANDED_BYTES == 256 * 2**20
    assert w.expanded(32768) == 4 * 32768 * per_head_token
    # a short context: all 128 heads at once (128 x 1,024 x 1,792 bytes = 224 MiB)
    assert w.expanded(1024) == 128 * 1024 * per_head_token
    # beyond 256 MiB per head (149,797 tokens), one head at a time
    assert w.expanded(163840) == 163840 * per_head_token


@pytest.mark.parametrize(
    "shape,tied", [("tiny-deepseek-v3", False), ("tiny-llama", True), ("tiny-qwen2moe", False)]
)
def test_the_loader_holds_each_tensor_as_the_plan_counts_it(tmp_path, shape, tied):
    """engine/models/weights.py decides each tensor's format (with its fallbacks) from the same
    placement: for a pretended GPU and for the CPU, it must agree with the plan's."""
    from engine.models.weights import Weights

    path = write_synthetic_gguf(tmp_path / "m.gguf", shape, qtype="Q4_K", tied_embeddings=tied)
    with open_gguf(path) as gguf:
        config = model_config(gguf)
        for vram in (64 * GiB, None):
            p = plan_memory(gguf, config, memory=MachineMemory(vram, 64 * GiB))
            weights = Weights(gguf, p.placement)
            for t in p.tensors:
                tensor = "token_embd.weight" if t.name not in gguf else t.name
                assert weights._format(t.name, tensor) == (t.device, t.format), (vram, t.name)
