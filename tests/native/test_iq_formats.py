"""IQ weight formats (IQ1_S ... IQ4_XS) of the native kernels against gguf's numpy reference.

Random blocks: every index, sign and sub-block-scale bit is random; the fp16
super-block scales are set to sane finite values (random bytes there would give
NaN/inf, which no real file holds).
"""

import moebox_iq_probe as iq
import moebox_native
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

Q = GGMLQuantizationType
IQ_TYPES = [Q.IQ1_S, Q.IQ1_M, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS, Q.IQ3_S, Q.IQ4_NL, Q.IQ4_XS]
ISAS = {"scalar": 0, "avx2": 1, "avx512": 2}
_cpu = moebox_native.cpu_features()
AVAILABLE_ISAS = ["scalar"] + (["avx2"] if _cpu["avx2"] else [])
if all(_cpu[f] for f in ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")):
    AVAILABLE_ISAS.append("avx512")


def random_blocks(qtype: Q, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """n_blocks random blocks of `qtype` as uint8 [n_blocks, block_bytes]."""
    _, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    scale = (rng.uniform(1e-3, 2e-2, n_blocks) * rng.choice([-1.0, 1.0], n_blocks)).astype(np.float16)
    if qtype == Q.IQ1_M:
        # The fp16 scale lives in the top nibbles of the four uint16 at bytes 48..55.
        words = blocks[:, 48:56].copy().view(np.uint16)  # [n_blocks, 4]
        bits = scale.view(np.uint16)
        for k in range(4):
            words[:, k] = (words[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
        blocks[:, 48:56] = words.view(np.uint8)
    else:
        blocks[:, 0:2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def row_elems(qtype: Q, n_blocks: int) -> int:
    return GGML_QUANT_SIZES[qtype][0] * n_blocks


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=lambda t: t.name)
def test_dequantize_is_exact(qtype):
    rng = np.random.default_rng(int(qtype))
    blocks = random_blocks(qtype, 257, rng)
    expected = gguf_dequantize(blocks, qtype).reshape(-1).astype(np.float32)
    got = iq.dequantize(blocks.reshape(-1), int(qtype))
    # Every IQ value is d * (small integer) * (codebook value): exact in float32 in
    # both implementations, so the two must agree bit for bit.
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(got, expected)


def q8_error_bound(w: np.ndarray, x: np.ndarray, block: int, fp16_scale: bool) -> float:
    """Bound on |w.x - w.x_q| from quantizing x to int8 per `block` values (ggml's Q8_K / Q8_0).

    x_q = d * round(x / d) with d = amax / 127, so each value is off by at most d/2.
    Worst case: sum |w_i| d/2. The rounding errors are independent and ~uniform on
    [-d/2, d/2] (std d / sqrt(12)), so their weighted sum stays within 6 standard
    deviations except with probability ~1e-9: that much tighter bound is the one
    that catches a kernel which mishandles one sub-block. Q8_0 also stores d as
    fp16 (relative error <= 2^-11): x_q gains a common factor (1 + e), adding up to
    2^-11 * sum |w_i x_i|.
    """
    w = w.astype(np.float64).reshape(-1, block)
    xb = x.astype(np.float64).reshape(-1, block)
    d = np.abs(xb).max(axis=1, keepdims=True) / 127.0
    worst = float((np.abs(w) * d / 2).sum())
    six_sigma = 6.0 * float(np.sqrt((w**2 * d**2 / 12).sum()))
    return min(worst, six_sigma) + (2.0**-11 * float(np.abs(w * xb).sum()) if fp16_scale else 0.0)


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@pytest.mark.parametrize("qtype", IQ_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_blocks", [1, 3, 16])
def test_vec_dot_against_float64(qtype, isa, n_blocks):
    rng = np.random.default_rng(1000 * int(qtype) + n_blocks)
    if qtype == Q.IQ4_NL:
        n_blocks *= 8  # same row lengths as the 256-element formats
    blocks = random_blocks(qtype, n_blocks, rng)
    w = gguf_dequantize(blocks, qtype).reshape(-1).astype(np.float64)
    act_block = 32 if qtype == Q.IQ4_NL else 256
    for x in (
        rng.standard_normal(w.size).astype(np.float32),
        # a few large outliers, as real activations have: coarse int8 steps elsewhere
        (rng.standard_normal(w.size) * np.where(rng.random(w.size) < 0.01, 30.0, 1.0)).astype(np.float32),
    ):
        exact = float(w @ x.astype(np.float64))
        got = iq.vec_dot(blocks.reshape(-1), int(qtype), x, ISAS[isa])
        # Activation quantization bound, plus float32 rounding of the block sums.
        tol = q8_error_bound(w, x, act_block, fp16_scale=qtype == Q.IQ4_NL) + 1e-5 * float(
            np.abs(w * x).sum()
        )
        assert abs(got - exact) <= tol, (got, exact, tol)


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@pytest.mark.parametrize("qtype", IQ_TYPES, ids=lambda t: t.name)
def test_vec_dot_matches_reference_on_same_activations(qtype, isa):
    """Kernels vs dequantized weights x the same int8 activations, summed in double.

    Both see identical quantized inputs; the kernels' integer block sums are exact,
    so only float32 rounding of the per-block scale products remains (a few ulp).
    """
    rng = np.random.default_rng(7 + int(qtype))
    n_blocks = 64 if qtype == Q.IQ4_NL else 8
    for _ in range(20):
        blocks = random_blocks(qtype, n_blocks, rng)
        x = rng.standard_normal(row_elems(qtype, n_blocks)).astype(np.float32)
        ref = iq.vec_dot_ref(blocks.reshape(-1), int(qtype), x)
        got = iq.vec_dot(blocks.reshape(-1), int(qtype), x, ISAS[isa])
        w = gguf_dequantize(blocks, qtype).reshape(-1)
        scale = float(np.abs(w.astype(np.float64) * x).sum())
        assert abs(got - ref) <= 1e-5 * scale + 1e-7, (got, ref, scale)
