"""ModelConfig from GGUF metadata alone, for every supported architecture."""

from __future__ import annotations

import gguf
import pytest

from engine.config import GatingFunc, MLALayout, model_config
from engine.errors import UnsupportedModelError
from engine.gguf_file import open_gguf
from engine.tools.inspect import inspect_text
from engine.tools.synth import SHAPES, write_synthetic_gguf


def _config(tmp_path, shape, **overrides):
    path = write_synthetic_gguf(tmp_path / f"{shape}.gguf", shape, **overrides)
    with open_gguf(path) as model:
        return model_config(model)


def test_smollm2(smollm2_path):
    with open_gguf(smollm2_path) as model:
        c = model_config(model)
    assert (c.architecture, c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads) == ("llama", 30, 576, 9, 3)
    assert (c.head_dim, c.ffn_dim, c.vocab_size, c.context_length) == (64, 1536, 49152, 8192)
    assert c.rope_theta == 100000.0 and c.moe is None and c.mla is None
    assert c.tied_embeddings  # SmolLM2 has no output.weight


def test_deepseek_v3_style(tmp_path):
    c = _config(tmp_path, "tiny-deepseek-v3")
    spec = SHAPES["tiny-deepseek-v3"]
    assert c.variant == "deepseek2 (V3/R1-style)"
    moe, mla = c.moe, c.mla
    assert moe.gating is GatingFunc.SIGMOID and moe.has_probs_bias and moe.weights_norm
    assert (moe.n_experts, moe.n_experts_used, moe.n_shared_experts) == (16, 4, 1)
    assert (moe.n_groups, moe.n_groups_used, moe.leading_dense_blocks) == (4, 2, 1)
    assert moe.weights_scale == pytest.approx(2.5) and moe.expert_ffn_dim == 256
    assert mla.layout is MLALayout.K_B_V_B
    assert (mla.q_lora_rank, mla.kv_lora_rank) == (spec.q_lora_rank, spec.kv_lora_rank)
    assert (mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim) == (64, 32, 64)
    rs = c.rope_scaling
    assert (rs.type, rs.factor, rs.original_context_length) == ("yarn", 4.0, 2048)
    assert rs.mscale_all_dim == pytest.approx(1.0)
    assert [c.is_moe_layer(i) for i in range(4)] == [False, True, True, True]


def test_deepseek_v2_lite_style_with_kv_b(tmp_path):
    c = _config(tmp_path, "tiny-deepseek-v2")
    assert c.variant == "deepseek2 (V2-Lite-style)"
    assert c.moe.gating is GatingFunc.SOFTMAX and not c.moe.has_probs_bias
    assert c.mla.layout is MLALayout.KV_B and c.mla.q_lora_rank == 0
    assert (c.mla.qk_nope_head_dim, c.mla.qk_rope_head_dim, c.mla.v_head_dim) == (64, 32, 64)
    assert c.moe.n_shared_experts == 2


def test_deepseek_v2_with_q_lora_and_groups(tmp_path):
    c = _config(tmp_path, "tiny-deepseek-v2", q_lora_rank=96, n_group=4, topk_group=2, split_kv_b=True)
    assert c.variant == "deepseek2 (V2-style)"
    assert c.mla.layout is MLALayout.K_B_V_B and c.moe.n_groups == 4 and c.moe.gating is GatingFunc.SOFTMAX


def test_qwen3moe(tmp_path):
    c = _config(tmp_path, "tiny-qwen3moe")
    assert c.qk_norm and c.head_dim == 64 and c.n_kv_heads == 2
    assert (c.moe.n_experts, c.moe.n_experts_used, c.moe.n_shared_experts) == (16, 4, 0)


def test_qwen2moe_shared_expert(tmp_path):
    c = _config(tmp_path, "tiny-qwen2moe")
    assert c.attention_bias and c.moe.has_shared_gate
    assert c.moe.n_shared_experts == 1 and c.moe.shared_ffn_dim == 512


def test_unknown_architecture_lists_supported(tmp_path):
    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(path, "mamba")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    with open_gguf(path) as model, pytest.raises(UnsupportedModelError, match="llama, qwen2, qwen2moe"):
        model_config(model)


def test_inspect_prints_groups(tmp_path, smollm2_path):
    text = inspect_text(write_synthetic_gguf(tmp_path / "v3.gguf", "tiny-deepseek-v3", qtype="Q4_K"))
    assert "deepseek2 (V3/R1-style)" in text
    assert "16 routed, 4 used per token, 1 shared" in text
    for group in ("embeddings", "routed experts", "shared experts", "router", "attention", "dense FFN"):
        assert group in text
    assert "Q4_K" in text
    assert "49,152 tokens" in inspect_text(smollm2_path)
