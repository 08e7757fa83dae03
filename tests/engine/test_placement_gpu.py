"""The GPU placement (everything but routed experts on the GPU in bf16) against the CPU
placement (every matrix through the native kernels) on the same file. Runs where CUDA is.

Tolerance: the GPU side holds bf16 copies of the dequantized weights (8 mantissa bits,
relative error ~2^-9 per weight) and the CPU side quantizes activations to 8 bits, so
logits differ by a few 1e-3 on average on this random model; measured on an H200:
mean |Δ| 0.0035, max |Δ| 0.022, top-1 100 %. Bounds: mean < 0.02, top-1 >= 95 %.
Both sides use the same KV cache dtype (f16 by default; bf16 and f32 as chosen), for the
MLA latent cache (DeepSeek-V3 shape) and the GQA cache (llama shape).
"""

from __future__ import annotations

import pytest
import torch

from engine.llm import LLM
from engine.tools.synth import write_synthetic_gguf

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(
    "shape,kv_cache_dtype",
    [
        ("tiny-deepseek-v3", "f16"),
        ("tiny-deepseek-v3", "bf16"),
        ("tiny-deepseek-v3", "f32"),
        ("tiny-llama", "f16"),
    ],
)
def test_gpu_placement_matches_cpu_placement(tmp_path, monkeypatch, shape, kv_cache_dtype):
    path = write_synthetic_gguf(tmp_path / "model.gguf", shape, qtype="Q4_K", seed=3)
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: False)
        cpu = LLM.from_gguf(path, progress=False, kv_cache_dtype=kv_cache_dtype)
    gpu = LLM.from_gguf(path, progress=False, kv_cache_dtype=kv_cache_dtype)
    assert torch.device(gpu.model.device).type == "cuda"
    ids = torch.randint(0, 250, (64,), generator=torch.Generator().manual_seed(0))
    lc = cpu.model.forward(ids, cpu.model.new_cache(128), all_logits=True).cpu()
    cache = gpu.model.new_cache(128)
    lg = gpu.model.forward(ids, cache, all_logits=True).cpu()
    stored = {p.dtype for layer in cache._layers for p in layer}
    print(
        f"{shape} {kv_cache_dtype}: mean |Δ| {(lc - lg).abs().mean():.4f}, cache {cache.n_bytes} bytes {stored}"
    )
    assert stored == {
        getattr(torch, {"f16": "float16", "bf16": "bfloat16", "f32": "float32"}[kv_cache_dtype])
    }
    assert (lc - lg).abs().mean() < 0.02
    assert (lc.argmax(-1) == lg.argmax(-1)).float().mean() >= 0.95
