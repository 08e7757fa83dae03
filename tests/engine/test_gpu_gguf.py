"""GpuQuantMatrix (engine/gpu): GGUF matrices kept quantized on the GPU, against gguf.quants.dequantize.

With CUDA the kernels run on the GPU; without it (or with TRITON_INTERPRET=1 set) they run in
Triton's CPU interpreter on CPU tensors, on shapes small enough for it. The reference is the
float64 product of x (as given) and gguf's dequantized weights (exact in float64).

Tolerances, per output element, with n = cols and p_k = x_k * w_k:
  - dequantize: equal to gguf's values in f32; in bf16 equal to those values rounded to bf16.
  - T = 1 (GEMV: f32 products of exact levels, f32 sums): |err| <= 2**-16 * sum_k |p_k|, plus
    2**-8 * |ref| when the result is bf16. Summing n <= 1024 terms in f32 gives a typical error
    near sqrt(n) * 2**-24 * sum|p_k| <= 2**-19 * sum|p_k|, so the bound has 8x margin; a wrong
    value or scale anywhere moves the result by about |p_k| itself, far beyond it.
  - T >= 2 (tensor cores): each weight, and an f32 x, is rounded to bf16 (relative error at most
    2**-8, about 2**-8 / sqrt(3) rms), the products are exact and summed in f32: the error is a
    random sum with rms <= 2**-8 * ||p||_2 (for both roundings), bounded here by
    6 * 2**-8 * ||p||_2, plus 2**-8 * |ref| for a bf16 result. A wrong weight moves it by
    ~|p_k| ~ ||p||_2 / sqrt(n) * O(1) per weight, and a wrong mapping by ~||p||_2.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ON_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not ON_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are defined, below

pytest.importorskip("triton", reason="triton is not installed")

sys.path.insert(0, str(Path(__file__).parents[1] / "native"))
from quant_blocks import random_weights, reference_dequantize  # noqa: E402

from engine.errors import UnsupportedModelError  # noqa: E402
from engine.gpu import gguf_kernels, gguf_matrix  # noqa: E402

if gguf_kernels.INTERPRETING == ON_CUDA:  # imported earlier in this process for the other backend
    gguf_kernels = importlib.reload(gguf_kernels)
    gguf_matrix = importlib.reload(gguf_matrix)

from engine.gpu.gguf_layout import LAYOUTS  # noqa: E402

GpuQuantMatrix = gguf_matrix.GpuQuantMatrix
DEVICE = "cuda" if ON_CUDA else "cpu"

K_FORMATS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]
LEGACY_FORMATS = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL"]
FLOAT_FORMATS = ["BF16", "F16"]
FORMATS = K_FORMATS + LEGACY_FORMATS + FLOAT_FORMATS
DECODE_T = [1, 3, 16]
PREFILL_T = [17, 64, 200]


def shape_for(name: str) -> tuple[int, int]:
    """(rows, cols): K-quant rows of whole 256-value blocks (ORACLES.md); the others 10 blocks of 32,
    a row no power-of-two tile divides, so the masked paths run too. Rows are no multiple of 16."""
    if ON_CUDA:
        return (200, 2048) if name in K_FORMATS else (200, 1120)
    return (40, 512) if name in K_FORMATS else (40, 320)


def make_matrix(name: str, rows: int, cols: int, seed: int, experts: int = 1):
    rng = np.random.default_rng(seed)
    blocks = random_weights(name, experts * rows, cols, rng)
    ref = reference_dequantize(name, blocks, experts * rows, cols).reshape(experts, rows, cols)
    shape = (experts, rows, cols) if experts > 1 else (rows, cols)
    from gguf import GGMLQuantizationType

    return GpuQuantMatrix(blocks, GGMLQuantizationType[name], shape, DEVICE), ref


def activations(T: int, cols: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, cols, generator=g).to(dtype).to(DEVICE)


def check_product(y: torch.Tensor, x: torch.Tensor, w: np.ndarray, tensor_cores: bool) -> None:
    """y [T, rows] against x [T, cols] @ w[rows, cols]^T in float64, with the module's tolerances."""
    x64 = x.double().cpu().numpy()
    ref = x64 @ w.T
    got = y.double().cpu().numpy()
    if tensor_cores:
        bound = 6 * 2.0**-8 * np.sqrt((x64**2) @ (w.T**2))
    else:
        bound = 2.0**-16 * (np.abs(x64) @ np.abs(w.T))
    if y.dtype == torch.bfloat16:
        bound = bound + 2.0**-8 * np.abs(ref)
    err = np.abs(got - ref)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert np.all(err <= bound), f"error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


@pytest.mark.parametrize("name", FORMATS)
def test_dequantize_equals_gguf(name):
    rows, cols = shape_for(name)
    m, ref = make_matrix(name, rows, cols, seed=1)
    f32 = m.dequantize(torch.float32).cpu().numpy()
    np.testing.assert_array_equal(f32, ref[0].astype(np.float32))
    bf16 = m.dequantize(torch.bfloat16).cpu()
    assert torch.equal(bf16, torch.from_numpy(ref[0].astype(np.float32)).to(torch.bfloat16))


@pytest.mark.parametrize("T", DECODE_T + PREFILL_T)
@pytest.mark.parametrize("name", FORMATS)
def test_matmul_matches_reference(name, T):
    rows, cols = shape_for(name)
    m, ref = make_matrix(name, rows, cols, seed=2)
    x = activations(T, cols, torch.bfloat16, seed=T)
    y = m.matmul(x)
    assert y.shape == (T, rows) and y.dtype == torch.bfloat16 and y.device == x.device
    check_product(y, x, ref[0], tensor_cores=T > 1 or name == "BF16")


@pytest.mark.parametrize("T", [1, 5, 33])
@pytest.mark.parametrize("name", ["Q4_K", "Q6_K", "Q8_0", "Q5_1", "F16", "BF16"])
def test_matmul_f32_activations(name, T):
    """An f32 x gives an f32 result; with one token its products are exact (no bf16 rounding)."""
    rows, cols = shape_for(name)
    m, ref = make_matrix(name, rows, cols, seed=3)
    x = activations(T, cols, torch.float32, seed=10 + T)
    y = m.matmul(x)
    assert y.dtype == torch.float32
    check_product(y, x, ref[0], tensor_cores=T > 1 or name == "BF16")


@pytest.mark.parametrize("name", ["Q4_K", "Q3_K", "Q5_0"])
def test_split_k_sums_the_same(name):
    """Splitting K over programs (done when the rows alone leave multiprocessors idle) adds the
    partial products of each split; the result must not change beyond rounding."""
    rows, cols = shape_for(name)
    m, ref = make_matrix(name, rows, cols, seed=4)
    args = m.kernel_args()
    for split in (2, 3):
        x1 = activations(1, cols, torch.float32, seed=20)
        y1 = gguf_kernels.gemv(x1, args, m.layout, rows, cols, gguf_kernels.GemvTiles(units=4), split)
        check_product(y1, x1, ref[0], tensor_cores=False)
        x = activations(20, cols, torch.bfloat16, seed=21)
        y = gguf_kernels.dot(
            x, args, m.layout, rows, cols, gguf_kernels.DotTiles(block_t=16, values=128), split
        )
        check_product(y, x, ref[0], tensor_cores=True)


@pytest.mark.parametrize("name", ["Q4_K", "Q8_0", "BF16"])
def test_expert_stack(name):
    """A [experts, rows, cols] tensor: matmul and dequantize pick one matrix."""
    rows, cols = shape_for(name)
    rows = 24
    m, ref = make_matrix(name, rows, cols, seed=5, experts=3)
    assert (m.n_experts, m.rows, m.cols) == (3, rows, cols)
    for e in (0, 2):
        x = activations(1, cols, torch.float32, seed=30 + e)
        check_product(m.matmul(x, expert=e), x, ref[e], tensor_cores=name == "BF16")
        np.testing.assert_array_equal(m.dequantize(torch.float32, expert=e).cpu().numpy(), ref[e])
    with pytest.raises(ValueError, match="expert index"):
        m.matmul(activations(1, cols, torch.float32, seed=0))


@pytest.mark.parametrize("name", ["Q3_K", "Q5_1", "F16"])
def test_repack_in_slices(name, monkeypatch):
    """Big tensors travel to the device and are repacked a slice of rows at a time."""
    from engine.gpu import gguf_layout

    rows, cols = shape_for(name)
    monkeypatch.setattr(gguf_layout, "_REPACK_VALUES", 7 * cols)  # slices of 7 rows, the last one shorter
    m, ref = make_matrix(name, rows, cols, seed=8)
    np.testing.assert_array_equal(m.dequantize(torch.float32).cpu().numpy(), ref[0])


@pytest.mark.parametrize("name", FORMATS)
def test_bytes_held_are_the_gguf_size(name):
    """VRAM held: the GGUF bytes, or up to 4 more per 256 values where 6-bit scales are unpacked."""
    rows, cols = shape_for(name)
    m, _ = make_matrix(name, rows, cols, seed=6)
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
    gguf_bytes = rows * cols // block * block_bytes
    assert gguf_bytes <= m.nbytes <= gguf_bytes + rows * cols // 256 * 4


def test_supported_types():
    from gguf import GGMLQuantizationType as Q

    for name in FORMATS:
        assert gguf_matrix.gpu_supported(Q[name])
    assert len(LAYOUTS) == len(FORMATS) - 1  # all but BF16 go through the kernels
    for name in ("F32", "IQ2_XXS", "IQ1_S", "Q8_K"):
        assert not gguf_matrix.gpu_supported(Q[name])
    with pytest.raises(UnsupportedModelError, match="IQ2_XXS has no GPU kernel"):
        GpuQuantMatrix(np.zeros(66 * 4, np.uint8), Q.IQ2_XXS, (4, 256), DEVICE)


def test_rejects_bad_input():
    from gguf import GGMLQuantizationType as Q

    m, _ = make_matrix("Q4_0", 8, 64, seed=7)
    with pytest.raises(ValueError, match=r"x must be \[T, 64\]"):
        m.matmul(activations(1, 32, torch.float32, seed=0))
    with pytest.raises(ValueError, match="bf16 or f32"):
        m.matmul(activations(1, 64, torch.float32, seed=0).half())
    assert m.matmul(activations(0, 64, torch.bfloat16, seed=0)).shape == (0, 8)
    with pytest.raises(UnsupportedModelError, match="whole blocks"):
        GpuQuantMatrix(np.zeros(18 * 3, np.uint8), Q.Q4_0, (2, 48), DEVICE)
