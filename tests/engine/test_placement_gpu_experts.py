"""Routed experts on the GPU, as the user's rules or the automatic fit place them, against the
CPU placement on the same file. Runs where CUDA is.

Tolerance as tests/engine/test_placement_gpu.py: the GPU kernels round activations to bf16 for
several tokens (relative error ~2^-9 per product) and the CPU kernels quantize activations to 8
bits, so logits differ by a few 1e-3 on average on this random model. Bounds: mean |Δ| < 0.02,
top-1 agreement >= 95 %. What the loader allocates on the GPU is compared with the plan's
weight bytes: within 10 % + 32 MiB (the allocator rounds each tensor up to 512 bytes; rope tables
and the kernels' level tables are not weights).
"""

from __future__ import annotations

import pytest
import torch

from engine.llm import LLM
from engine.placement import user_rules
from engine.tools.synth import write_synthetic_gguf

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    return write_synthetic_gguf(
        tmp_path_factory.mktemp("gpu") / "v3.gguf", "tiny-deepseek-v3", qtype="Q4_K", seed=3
    )


@pytest.fixture(scope="module")
def cpu_logits(v3):
    mp = pytest.MonkeyPatch()
    mp.setattr(torch.cuda, "is_available", lambda: False)
    try:
        cpu = LLM.from_gguf(v3, progress=False, kv_cache_dtype="f16")
    finally:
        mp.undo()
    ids = torch.randint(0, 250, (64,), generator=torch.Generator().manual_seed(0))
    logits = cpu.model.forward(ids, cpu.model.new_cache(128), all_logits=True).cpu()
    cpu.close()
    return ids, logits


@pytest.mark.parametrize(
    "flags,gpu_layers",
    [
        ([("-ot", "exps=CUDA0")], [1, 2, 3]),
        ([("--n-cpu-moe", "2")], [2, 3]),  # blocks 0-1 in RAM (block 0 is dense), 2-3 on the GPU
        ([], [1, 2, 3]),  # the automatic fit: a tiny model's experts all fit
        ([("--cpu-moe", None)], []),
    ],
)
def test_gpu_experts_match_the_cpu_placement(v3, cpu_logits, flags, gpu_layers):
    ids, lc = cpu_logits
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    gpu = LLM.from_gguf(
        v3, progress=False, kv_cache_dtype="f16", context_length=512, placement=user_rules(flags)
    )
    allocated = torch.cuda.memory_allocated() - before
    plan = gpu.memory_plan
    assert list(plan.gpu_expert_bytes()) == gpu_layers
    planned = plan.weight_bytes("cuda")
    print(f"{flags}: allocated {allocated / 2**20:.1f} MiB, planned {planned / 2**20:.1f} MiB")
    assert abs(allocated - planned) <= 0.1 * planned + 32 * 2**20
    for i, layer in enumerate(gpu.model.layers):
        experts = getattr(layer.ffn, "experts", None)
        if experts is not None:
            assert (experts.native is None) == (i in gpu_layers), i
    lg = gpu.model.forward(ids, gpu.model.new_cache(128), all_logits=True).cpu()
    gpu.close()
    print(f"mean |Δ| {(lc - lg).abs().mean():.4f}")
    assert (lc - lg).abs().mean() < 0.02
    assert (lc.argmax(-1) == lg.argmax(-1)).float().mean() >= 0.95
