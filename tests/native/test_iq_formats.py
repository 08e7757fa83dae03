"""IQ weight formats (IQ1_S ... IQ4_XS): what the generic format tests do not pin down.

The generic tests (test_formats.py) run every format, IQ included, through
dequantize and matmul on every ISA. Here: dequantization bit for bit against
gguf.quants.dequantize, a tighter statistical bound for the dot products on rows
as long as real expert rows (activations with outliers), and the format table.
Random blocks: every index, sign and sub-block-scale bit is random, the fp16
scales are sane (quant_blocks.random_weights). Row lengths are multiples of 256,
as llama.cpp requires for these formats.
"""

from __future__ import annotations

import moebox_native as mn
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from quant_blocks import random_weights, reference_dequantize

IQ_FORMATS = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS"]


def qtype(name: str) -> int:
    return int(GGMLQuantizationType[name])


@pytest.mark.parametrize("name", IQ_FORMATS)
def test_dequantize_is_bit_exact(name):
    rows, cols = 3, 256 * 43
    w = random_weights(name, rows, cols, np.random.default_rng(qtype(name)))
    expected = reference_dequantize(name, w, rows, cols).astype(np.float32)
    got = mn.dequantize(w, qtype(name), np.empty((rows, cols), np.float32))
    # Every IQ value is d * (small integer) * (codebook value): exact in float32 in
    # both implementations, so they must agree bit for bit (not just to 1 ulp).
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(got, expected)


def q8_error_bound(w: np.ndarray, x: np.ndarray, block: int, fp16_scale: bool) -> np.ndarray:
    """Per output, a bound on |w.x - w.x_q| from quantizing x to int8 per `block` values.

    w [rows, cols], x [T, cols] -> [T, rows]. x_q = d * round(x / d) with
    d = max|x| / 127 per block, so each value moves by at most d/2: worst case
    sum |w_i| d/2. The rounding errors are independent and ~uniform on
    [-d/2, d/2] (std d / sqrt(12)), so their weighted sum stays within 6 standard
    deviations except with probability ~1e-9; on 4096-long rows that bound is ~20x
    tighter than the worst case, tight enough that one mishandled 32-weight
    sub-block fails it. Q8_0 (IQ4_NL's activations) also stores d as fp16
    (relative error <= 2^-11), a common factor on x_q: + 2^-11 * sum |w_i x_i|.
    """
    T = x.shape[0]
    d = np.abs(x).reshape(T, -1, block).max(axis=2) / 127.0  # [T, blocks]
    wb = w.reshape(w.shape[0], -1, block)  # [rows, blocks, block]
    worst = np.abs(wb).sum(axis=2) @ (d / 2).T  # [rows, T]
    six_sigma = 6.0 * np.sqrt((wb**2).sum(axis=2) @ (d**2 / 12).T)
    bound = np.minimum(worst, six_sigma).T
    if fp16_scale:
        bound = bound + 2.0**-11 * (np.abs(x) @ np.abs(w).T)
    return bound


@pytest.mark.parametrize("name", IQ_FORMATS)
@pytest.mark.parametrize(("rows", "cols", "tokens"), [(1, 256, 1), (33, 4096, 1), (5, 7168, 4)])
def test_matmul_within_activation_quantization_error(name, rows, cols, tokens, isa):
    rng = np.random.default_rng(1000 * qtype(name) + rows)
    w8 = random_weights(name, rows, cols, rng)
    w = reference_dequantize(name, w8, rows, cols)  # float64 [rows, cols]
    # Normal activations with a few large outliers, as real ones have: coarse int8 steps elsewhere.
    x = (rng.standard_normal((tokens, cols)) * np.where(rng.random((tokens, cols)) < 0.01, 30.0, 1.0)).astype(
        np.float32
    )
    x64 = x.astype(np.float64)
    got = mn.matmul(w8, qtype(name), rows, cols, x)  # [tokens, rows]
    # plus float32 rounding of the per-block scale products (integer block sums are exact)
    tol = q8_error_bound(w, x64, 32 if name == "IQ4_NL" else 256, fp16_scale=name == "IQ4_NL")
    tol += 2e-5 * (np.abs(x64) @ np.abs(w).T)
    err = np.abs(got - x64 @ w.T)
    assert np.all(err <= tol), f"max excess {np.max(err - tol)}"


@pytest.mark.parametrize("name", IQ_FORMATS)
def test_format_table_entry(name):
    entry = next(f for f in mn.formats() if f["name"] == name)
    assert entry["type"] == qtype(name)
    assert (entry["block_elems"], entry["block_bytes"]) == GGML_QUANT_SIZES[GGMLQuantizationType[name]]
    assert entry["vec_dot_type"] == int(
        GGMLQuantizationType.Q8_0 if name == "IQ4_NL" else GGMLQuantizationType.Q8_K
    )
    assert {"scalar", "avx2"} <= set(entry["isas"])
    if not name.startswith("IQ4"):  # codebook formats: own AVX-512 kernel (IQ4_* use the AVX2 one)
        assert "avx512" in entry["isas"]


def test_row_length_not_a_multiple_of_the_block_is_a_value_error():
    w = random_weights("IQ1_S", 1, 256, np.random.default_rng(0))
    with pytest.raises(ValueError):
        mn.matmul(w, qtype("IQ1_S"), 1, 300, np.zeros(300, np.float32))


def ggml_quantize(name: str, x: np.ndarray) -> np.ndarray:
    """x float32 [rows, cols] quantized by ggml's own quantizer (llama-cpp-python's libggml-base)."""
    import ctypes
    import os

    llama_cpp = pytest.importorskip("llama_cpp")
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 3
    lib.ggml_quantize_chunk.argtypes += [ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    rows, cols = x.shape
    elems, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
    out = np.empty((rows, cols // elems * nbytes), np.uint8)
    importance = np.ones(cols, np.float32)  # IQ1/IQ2 quantizers require an importance matrix: uniform
    x = np.ascontiguousarray(x, dtype=np.float32)
    lib.ggml_quantize_init(qtype(name))
    written = lib.ggml_quantize_chunk(
        qtype(name), x.ctypes.data, out.ctypes.data, 0, rows, cols, importance.ctypes.data
    )
    assert written == out.nbytes
    return out


@pytest.fixture(scope="module")
def smollm2_ffn_down() -> np.ndarray:
    """float32 [576, 1536]: a real weight matrix (SmolLM2's blk.0.ffn_down), rows a multiple of 256 long."""
    from test_formats import smollm2_tensors

    t = smollm2_tensors()["blk.0.ffn_down.weight"]
    rows, cols = int(t.shape[1]), int(t.shape[0])
    return reference_dequantize(t.tensor_type.name, np.asarray(t.data), rows, cols).astype(np.float32)


_ggml_blocks: dict[str, np.ndarray] = {}


@pytest.mark.slow  # ggml's IQ1/IQ2 quantizer setup takes seconds
@pytest.mark.parametrize("name", IQ_FORMATS)
def test_real_weights_quantized_by_ggml(name, isa, smollm2_ffn_down):
    """Blocks written by ggml's quantizer (real scale and index statistics, not random bytes)."""
    x = smollm2_ffn_down[:96]
    if name not in _ggml_blocks:  # once for all ISAs
        _ggml_blocks[name] = ggml_quantize(name, x)
    w8 = _ggml_blocks[name]
    rows, cols = x.shape
    w = reference_dequantize(name, w8, rows, cols)
    got = mn.dequantize(w8, qtype(name), np.empty((rows, cols), np.float32))
    np.testing.assert_array_equal(got, w.astype(np.float32))
    # ggml's writer, gguf's reader and our kernels agree on the layout: the weights come back
    # close to the originals (a misread field gives errors as large as the weights themselves).
    assert np.sqrt(np.mean((w - x) ** 2)) < 0.7 * np.sqrt(np.mean(x.astype(np.float64) ** 2))
    a = np.random.default_rng(11).standard_normal((2, cols)).astype(np.float32)
    a64 = a.astype(np.float64)
    y = mn.matmul(w8, qtype(name), rows, cols, a)
    tol = q8_error_bound(w, a64, 32 if name == "IQ4_NL" else 256, fp16_scale=name == "IQ4_NL")
    tol += 2e-5 * (np.abs(a64) @ np.abs(w).T)
    assert np.all(np.abs(y - a64 @ w.T) <= tol)
