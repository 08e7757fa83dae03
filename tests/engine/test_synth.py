"""Synthetic models: random blocks decode to finite weights of the asked magnitude."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q
from gguf.quants import dequantize

from engine.errors import MoeboxError
from engine.tools.synth import random_tensor_bytes, write_synthetic_gguf

BLOCK_TYPES = [
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS",
]  # fmt: skip


@pytest.mark.parametrize("name", BLOCK_TYPES)
def test_random_blocks_have_sane_scales(name):
    blocks = random_tensor_bytes(Q[name], (32, 512), np.random.default_rng(1), std=0.02)
    w = dequantize(blocks, Q[name])
    assert w.shape == (32, 512)
    assert np.isfinite(w).all()
    # Within a factor of ~3 of the asked std: sane for a random model, never 0 or huge.
    assert 0.006 < float(w.std()) < 0.06, float(w.std())


@pytest.mark.parametrize("name", BLOCK_TYPES)
def test_random_blocks_have_no_common_offset(name):
    # A matrix whose weights share an offset adds offset x sum(input) to every output: the
    # all-ones direction then grows layer after layer until every token looks alike (synth's
    # docstring). Quantized real weights are centred, so must these be. Counting noise of the
    # mean over 64 x 4096 weights is ~0.002 std; the old blocks were off by 0.1-0.8 std.
    w = dequantize(random_tensor_bytes(Q[name], (64, 4096), np.random.default_rng(2), std=0.02), Q[name])
    assert abs(float(w.mean())) < 0.02 * float(w.std()), float(w.mean() / w.std())


def test_unknown_shape_and_type(tmp_path):
    with pytest.raises(MoeboxError, match="known shapes"):
        write_synthetic_gguf(tmp_path / "x.gguf", "gpt-5")
    with pytest.raises(MoeboxError, match="unknown quant type"):
        write_synthetic_gguf(tmp_path / "x.gguf", "tiny-llama", qtype="Q9_Z")
