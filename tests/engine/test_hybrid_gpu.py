"""The hybrid placement with quantized GPU weights (every non-expert matrix kept in its GGUF
blocks in VRAM, routed experts in RAM on the native kernels: `--cpu-moe`) against the CPU
placement on the same file. Runs where CUDA is.

Tolerance: the GPU kernels round activations to bf16 for T >= 2 (8 mantissa bits) and
dequantize the same GGUF values exactly; the CPU side rounds activations to 8 bits. On this
random model that moves logits by a few 1e-3 on average (measured on an H100: mean |Δ|
0.0025 for Q6_K); bounds: mean |Δ| < 0.02, and the same top-1 token at every position of a
64-token prefill where the CPU's own top-2 margin is clear (> 0.05): a random tiny model has
near ties that such rounding flips (8 % of positions for Q6_K). Greedy decoding for 32 tokens
must give the same tokens, except where the CPU's top-2 margin is such a near tie.
"""

from __future__ import annotations

import pytest
import torch

from engine.llm import LLM
from engine.placement import user_rules
from engine.tools.synth import write_synthetic_gguf

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _greedy(llm: LLM, ids: torch.Tensor, n: int) -> tuple[list[int], list[float]]:
    cache = llm.model.new_cache(ids.shape[0] + n + 1)
    logits = llm.model.forward(ids, cache)[-1].float().cpu()
    out, margins = [], []
    for _ in range(n):
        top = logits.topk(2)
        out.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        logits = llm.model.forward(torch.tensor([out[-1]]), cache)[-1].float().cpu()
    return out, margins


@pytest.mark.parametrize(
    "shape,qtype", [("tiny-deepseek-v3", "Q4_K"), ("tiny-deepseek-v3", "Q6_K"), ("tiny-llama", "Q8_0")]
)
def test_hybrid_with_quantized_gpu_weights_matches_cpu(tmp_path, monkeypatch, shape, qtype):
    path = write_synthetic_gguf(tmp_path / "model.gguf", shape, qtype=qtype, seed=3)
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: False)
        cpu = LLM.from_gguf(path, progress=False, kv_cache_dtype="f32")
    gpu = LLM.from_gguf(
        path, progress=False, kv_cache_dtype="f32", placement=user_rules([("--cpu-moe", None)])
    )
    assert torch.device(gpu.model.device).type == "cuda"
    ids = torch.randint(0, 250, (64,), generator=torch.Generator().manual_seed(0))
    lc = cpu.model.forward(ids, cpu.model.new_cache(128), all_logits=True).cpu()
    lg = gpu.model.forward(ids, gpu.model.new_cache(128), all_logits=True).float().cpu()
    mean = (lc - lg).abs().mean().item()
    same = lc.argmax(-1) == lg.argmax(-1)
    top2 = lc.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.05
    print(
        f"{shape} {qtype}: mean |Δ| {mean:.4f}, max |Δ| {(lc - lg).abs().max():.4f}, "
        f"top-1 {same.float().mean():.3f}, at clear margins {same[clear].float().mean():.3f} of {int(clear.sum())}"
    )
    assert mean < 0.02 and bool(same[clear].all()) and clear.sum() >= 32
    want, margins = _greedy(cpu, ids[:16], 32)
    got, _ = _greedy(gpu, ids[:16], 32)
    first = next((i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b), None)
    assert first is None or margins[first] < 0.05, (first, want, got)
