"""The KV cache dtype option: names, the auto choice, sizes, and what a loaded model stores.
(How an f16 cache moves logits is measured against transformers in test_models_transformers.)"""

from __future__ import annotations

import logging

import pytest
import torch

from engine.config import model_config
from engine.errors import InvalidOptionError
from engine.gguf_file import open_gguf
from engine.kv_cache import KV_CACHE_DTYPES, cache_bytes_per_token, resolve_cache_dtype
from engine.llm import LLM
from engine.tools.synth import write_synthetic_gguf
from moebox.cli import KV_CACHE_DTYPE_NAMES, build_parser


def test_auto_is_f16_on_a_gpu_and_f32_in_ram():
    assert resolve_cache_dtype("auto", "cuda") == "f16"
    assert resolve_cache_dtype("auto", "cuda:1") == "f16"
    assert resolve_cache_dtype("auto", "cpu") == "f32"
    for name in KV_CACHE_DTYPES:
        assert resolve_cache_dtype(name, "cpu") == name == resolve_cache_dtype(name, "cuda")


def test_unknown_dtype_is_our_error(smollm2_path):
    with pytest.raises(InvalidOptionError, match="fp8"):
        resolve_cache_dtype("fp8", "cpu")
    with pytest.raises(InvalidOptionError, match="choose auto or one of f16, bf16, f32"):
        LLM.from_gguf(smollm2_path, kv_cache_dtype="fp8", progress=False)


def test_cli_offers_every_dtype():
    assert set(KV_CACHE_DTYPE_NAMES) == {"auto", *KV_CACHE_DTYPES}
    for cmd in (["serve"], ["chat"], ["bench", "model"]):
        args = build_parser().parse_args([*cmd, "--kv-cache-dtype", "f16"])
        assert args.kv_cache_dtype == "f16"
        assert build_parser().parse_args(cmd).kv_cache_dtype == "auto"


def test_bytes_per_token_gqa_and_mla(smollm2_path, tmp_path):
    smol = model_config(open_gguf(smollm2_path))  # 30 layers, 3 KV heads of 64
    assert cache_bytes_per_token(smol, torch.float16) == 30 * 2 * 3 * 64 * 2
    assert cache_bytes_per_token(smol, torch.float32) == 30 * 2 * 3 * 64 * 4
    v3 = model_config(open_gguf(write_synthetic_gguf(tmp_path / "v3.gguf", "tiny-deepseek-v3")))
    mla = v3.mla
    assert (
        cache_bytes_per_token(v3, torch.bfloat16)
        == v3.n_layers * (mla.kv_lora_rank + mla.qk_rope_head_dim) * 2
    )


@pytest.mark.parametrize("name", ["f16", "bf16", "f32"])
def test_loaded_model_stores_the_chosen_dtype(smollm2_path, caplog, name):
    with caplog.at_level(logging.INFO, logger="moebox.llm"):
        llm = LLM.from_gguf(smollm2_path, context_length=256, progress=False, kv_cache_dtype=name)
    assert llm.kv_cache_dtype == name
    per_token = 30 * 2 * 3 * 64 * KV_CACHE_DTYPES[name].itemsize
    assert f"KV cache: {name} on cpu, {per_token / 1024:.1f} KiB per token" in caplog.text
    seq_ids = llm.encode_prompt("The capital of France is")
    cache = llm.model.new_cache(64)
    llm.model.forward(torch.tensor(seq_ids), cache)
    assert {p.dtype for layer in cache._layers for p in layer} == {KV_CACHE_DTYPES[name]}
    assert cache.n_bytes == 64 * 30 * 2 * 3 * 64 * KV_CACHE_DTYPES[name].itemsize  # capacity: 64 rows
