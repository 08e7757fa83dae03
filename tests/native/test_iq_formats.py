"""IQ weight formats (IQ1_S ... IQ4_XS) of the native kernels against gguf's numpy reference.

Random blocks: every index, sign and sub-block-scale bit is random; the fp16
super-block scales are set to sane finite values (random bytes there would give
NaN/inf, which no real file holds). Row lengths are multiples of 256, as
llama.cpp requires for these formats.
"""

import moebox_native as mn
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

Q = GGMLQuantizationType
IQ_TYPES = [Q.IQ1_S, Q.IQ1_M, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS, Q.IQ3_S, Q.IQ4_NL, Q.IQ4_XS]
_LEVELS = ["scalar", "avx2", "avx512", "amx"]
AVAILABLE_ISAS = _LEVELS[: _LEVELS.index(mn.best_isa()) + 1]


@pytest.fixture(params=AVAILABLE_ISAS)
def isa(request):
    before = mn.isa()
    mn.set_isa(request.param)
    yield request.param
    mn.set_isa(before)


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


def random_matrix(qtype: Q, rows: int, cols: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """GGUF bytes [rows, row_bytes] of a random matrix and its float64 dequantization [rows, cols]."""
    block_elems, _ = GGML_QUANT_SIZES[qtype]
    blocks = random_blocks(qtype, rows * cols // block_elems, rng)
    w = gguf_dequantize(blocks, qtype).astype(np.float64).reshape(rows, cols)
    return blocks.reshape(rows, -1), w


def dequantized_activations(x: np.ndarray, qtype: Q) -> np.ndarray:
    """The int8 activation blocks the kernels see for x [T, cols], as float64 values."""
    raw = mn.quantize_activations(x, int(qtype))  # uint8 [T, row bytes]
    if qtype == Q.IQ4_NL:  # block_q8_0: fp16 d, int8 qs[32]
        b = raw.reshape(x.shape[0], -1, 34)
        d = b[..., :2].copy().view(np.float16).astype(np.float64)
        qs = b[..., 2:].view(np.int8)
    else:  # block_q8_K: f32 d, int8 qs[256], int16 bsums[16]
        b = raw.reshape(x.shape[0], -1, 292)
        d = b[..., :4].copy().view(np.float32).astype(np.float64)
        qs = b[..., 4:260].view(np.int8)
    return (d * qs).reshape(x.shape)


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=lambda t: t.name)
def test_dequantize_is_exact(qtype):
    rng = np.random.default_rng(int(qtype))
    blocks = random_blocks(qtype, 257, rng)
    expected = gguf_dequantize(blocks, qtype).reshape(-1).astype(np.float32)
    got = mn.dequantize(blocks, int(qtype), np.empty(expected.size, np.float32))
    # Every IQ value is d * (small integer) * (codebook value): exact in float32 in
    # both implementations, so the two must agree bit for bit.
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("qtype", [Q.IQ1_S, Q.IQ2_XXS, Q.IQ4_XS], ids=lambda t: t.name)
def test_dequantize_to_bf16_rounds_the_exact_values(qtype):
    torch = pytest.importorskip("torch")
    blocks = random_blocks(qtype, 16, np.random.default_rng(3))
    expected = torch.from_numpy(gguf_dequantize(blocks, qtype).reshape(-1).astype(np.float32)).to(
        torch.bfloat16
    )
    got = mn.dequantize(blocks, int(qtype), torch.empty(expected.numel(), dtype=torch.bfloat16))
    assert torch.equal(got, expected)


def q8_error_bound(w: np.ndarray, x: np.ndarray, block: int, fp16_scale: bool) -> np.ndarray:
    """Per output, a bound on |w.x - w.x_q| from quantizing x to int8 per `block` values.

    w [rows, cols], x [T, cols] -> [T, rows]. x_q = d * round(x / d) with
    d = max|x| / 127 per block, so each value is off by at most d/2; worst case
    sum |w_i| d/2. The rounding errors are independent and ~uniform on [-d/2, d/2]
    (std d / sqrt(12)), so their weighted sum stays within 6 standard deviations
    except with probability ~1e-9: that much tighter bound is the one that catches
    a kernel which mishandles one sub-block. Q8_0 also stores d as fp16 (relative
    error <= 2^-11): x_q gains a common factor (1 + e), up to 2^-11 * sum |w_i x_i|.
    """
    T, cols = x.shape
    d = np.abs(x.astype(np.float64)).reshape(T, -1, block).max(axis=2) / 127.0  # [T, blocks]
    wb = w.reshape(w.shape[0], -1, block)  # [rows, blocks, block]
    worst = np.abs(wb).sum(axis=2) @ (d / 2).T  # [rows, T]
    six_sigma = 6.0 * np.sqrt((wb**2).sum(axis=2) @ (d**2 / 12).T)
    bound = np.minimum(worst, six_sigma).T
    if fp16_scale:
        bound = bound + 2.0**-11 * (np.abs(x.astype(np.float64)) @ np.abs(w).T)
    return bound


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize(("rows", "cols", "tokens"), [(1, 256, 1), (7, 768, 1), (33, 4096, 1), (5, 512, 9)])
def test_matmul_against_float64(qtype, isa, rows, cols, tokens):
    rng = np.random.default_rng(1000 * int(qtype) + rows)
    weight, w = random_matrix(qtype, rows, cols, rng)
    # Normal activations with a few large outliers, as real ones have: coarse int8 steps elsewhere.
    x = (rng.standard_normal((tokens, cols)) * np.where(rng.random((tokens, cols)) < 0.01, 30.0, 1.0)).astype(
        np.float32
    )
    exact = x.astype(np.float64) @ w.T  # [tokens, rows]
    got = mn.matmul(weight, int(qtype), rows, cols, x)
    # Activation quantization bound, plus float32 rounding of the block sums.
    tol = q8_error_bound(w, x, 32 if qtype == Q.IQ4_NL else 256, fp16_scale=qtype == Q.IQ4_NL)
    tol += 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(w).T)
    assert np.all(np.abs(got - exact) <= tol), np.max(np.abs(got - exact) - tol)


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=lambda t: t.name)
def test_matmul_matches_reference_on_same_activations(qtype, isa):
    """Kernels vs dequantized weights x the very int8 activations they see, in float64.

    Both sides use identical quantized inputs; the kernels' integer block sums are
    exact, so only float32 rounding of the per-block scale products (a few ulp per
    block) remains: 1e-5 of sum |w_i x_i| bounds it with room to spare, and a kernel
    that gets one 32-weight sub-block wrong is off by far more.
    """
    rng = np.random.default_rng(7 + int(qtype))
    rows, cols = 24, 2048
    weight, w = random_matrix(qtype, rows, cols, rng)
    x = rng.standard_normal((3, cols)).astype(np.float32)
    xq = dequantized_activations(x, qtype)
    ref = xq @ w.T
    got = mn.matmul(weight, int(qtype), rows, cols, x)
    tol = 1e-5 * (np.abs(xq) @ np.abs(w).T) + 1e-7
    assert np.all(np.abs(got - ref) <= tol), np.max(np.abs(got - ref) - tol)


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=lambda t: t.name)
def test_formats_table_lists_iq_kernels(qtype):
    entry = {f["type"]: f for f in mn.formats()}[int(qtype)]
    assert entry["name"] == qtype.name
    assert (entry["block_elems"], entry["block_bytes"]) == GGML_QUANT_SIZES[qtype]
    assert {"scalar", "avx2"} <= set(entry["isas"])


def test_wrong_weight_size_is_a_value_error():
    blocks = random_blocks(Q.IQ1_S, 2, np.random.default_rng(0))
    with pytest.raises(ValueError):
        mn.matmul(blocks[:, :-1], int(Q.IQ1_S), 2, 256, np.zeros(256, np.float32))
    with pytest.raises(ValueError):
        mn.matmul(blocks, int(Q.IQ1_S), 1, 300, np.zeros(300, np.float32))
