"""AMX tile kernels (prefill: matmul and MoE experts with >= 4 tokens per weight row).

They run only where the CPU has AMX (and Linux granted the tile state); elsewhere
every test here skips and says so.

Tolerance: the tile kernels compute the same integer sums as the vec_dot (per
super-block, exact in int32: TDPBUSD / TDPBSSD products of byte planes that hold
the quants times digits of the sub-block scales, recombined by shifts) and then
one float32 product and fused add per super-block, like the vec_dot; only the order of the float
accumulation differs. So the AMX results are held to the very bounds of the
other kernels against the float64 reference (test_formats.check_matmul:
2e-5 sum |w x_hat| against W_deq @ x_hat; test_moe.check: the worst-case
quantization bound plus the tight float64 pipeline / the composed per-token
call), but not to bitwise equality with the GEMV (those tests skip AMX).
"""

from __future__ import annotations

import moebox_native
import numpy as np
import pytest
from quant_blocks import qtype, random_weights
from test_formats import check_matmul
from test_moe import Experts, check, routing

pytestmark = pytest.mark.skipif(
    moebox_native.best_isa() != "amx",
    reason=f"no AMX tile kernels on this CPU ({moebox_native.cpu_features()['brand']}): "
    "needs AMX-INT8 and Linux's ARCH_REQ_XCOMP_PERM grant",
)


@pytest.fixture
def amx():
    before = moebox_native.isa()
    moebox_native.set_isa("amx")
    yield
    moebox_native.set_isa(before)


# The k-quants of Q4_K_M (Q4_K, Q6_K) and of the Unsloth UD-Q2_K_XL / UD-IQ1 quants (Q2_K, Q3_K),
# and the IQ formats through the int8 + scales slot (IQ1_S, IQ1_M, IQ2_XXS: the routed experts of
# the UD-IQ1_S / UD-IQ1_M / UD-IQ2_XXS quants).
IQ_TILE_FORMATS = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"]
TILE_FORMATS = ["Q2_K", "Q3_K", "Q4_K", "Q6_K", *IQ_TILE_FORMATS]


@pytest.mark.parametrize("name", TILE_FORMATS)
def test_format_has_a_tile_kernel(name):
    entry = next(f for f in moebox_native.formats() if f["name"] == name)
    assert "amx" in entry["isas"]


@pytest.mark.parametrize("name", TILE_FORMATS)
@pytest.mark.parametrize("tokens", [4, 16, 17, 33, 300, 512])
@pytest.mark.parametrize("rows", [37, 64])
def test_amx_matmul(name, tokens, rows, amx):
    """Random blocks span every scale and quant value (Q6_K scales over all of int8, Q3_K's
    -32 * -4 corner), so each byte plane's range is exercised."""
    rng = np.random.default_rng(tokens * 7 + rows)
    cols = 256 * 3
    w = random_weights(name, rows, cols, rng)
    x = (rng.standard_normal((tokens, cols)) * rng.uniform(0.1, 3.0, size=(tokens, 1))).astype(np.float32)
    check_matmul(name, w, rows, cols, x)


# Byte ranges set to one value in half of the rows: the largest products of a byte plane.
EXTREME_BLOCKS = {
    "Q6_K": [((0, 192), 0x00), ((192, 208), 0x80)],  # q = 0, scales -128: sc (q - 32) = 4096
    "Q3_K": [((0, 108), 0x00)],  # hbit 0, q = 0, scales 0: (-32) * (-4) = 128
    "Q2_K": [((0, 16), 0xFF), ((16, 80), 0xFF)],  # scales and minimums 15, q = 3
    "Q4_K": [((4, 16), 0xFF), ((16, 144), 0xFF)],  # scales and minimums 63, q = 15
    "IQ4_XS": [((2, 8), 0x00), ((8, 136), 0x00)],  # scales -32, values -127: 4064
    # The IQ formats' largest scales (2 * 15 + 1; IQ1: 2 * 7 + 1 and every delta -1/8: 15 * -9).
    "IQ1_S": [((34, 50), 0xFF)],
    # qh all set; scale words 0x3FFF: scales 7, the fp16 scale spread over their top nibbles 0x3333
    "IQ1_M": [((32, 48), 0xFF)] + [((k, k + 1), 0xFF if k % 2 == 0 else 0x3F) for k in range(48, 56)],
    "IQ2_XXS": [((2, 66), 0xFF)],
    "IQ2_XS": [((66, 74), 0xFF)],
    "IQ2_S": [((74, 82), 0xFF)],
    "IQ3_XXS": [((66, 98), 0xFF)],
    "IQ3_S": [((106, 110), 0xFF)],
}


@pytest.mark.parametrize("name", TILE_FORMATS)
def test_amx_matmul_extreme_blocks(name, amx):
    rng = np.random.default_rng(5)
    rows, cols, tokens = 32, 512, 20
    w = random_weights(name, rows, cols, rng)
    blocks = w.reshape(rows, cols // 256, -1)  # [rows, super-blocks, block bytes]
    for (lo, hi), value in EXTREME_BLOCKS[name]:
        blocks[::2, :, lo:hi] = value
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    check_matmul(name, w, rows, cols, x)


@pytest.mark.parametrize("name", TILE_FORMATS)
def test_amx_matmul_runs_the_tile_kernel(name, amx):
    """The tiles add in another order than the AVX-512 dot, so some output differs in its
    last bits; if every one matched bitwise, the AMX level would be running the AVX-512 code."""
    rng = np.random.default_rng(3)
    rows, cols, tokens = 48, 2048, 64
    w = random_weights(name, rows, cols, rng)
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    t = int(qtype(name))
    y_amx = moebox_native.matmul(w, t, rows, cols, x)
    moebox_native.set_isa("avx512")
    y_avx512 = moebox_native.matmul(w, t, rows, cols, x)
    assert not np.array_equal(y_amx, y_avx512)
    np.testing.assert_allclose(y_amx, y_avx512, rtol=1e-4, atol=1e-4 * np.abs(y_avx512).max())


@pytest.mark.parametrize(
    "fmts",
    [
        ("Q4_K", "Q4_K", "Q4_K"),
        ("Q4_K", "Q4_K", "Q6_K"),  # Q4_K_M
        ("Q2_K", "Q2_K", "Q3_K"),  # UD-Q2_K_XL
        ("Q3_K", "Q3_K", "Q4_K"),
        ("Q6_K", "Q6_K", "Q2_K"),
        ("Q4_K", "Q6_K", "Q4_K"),  # gate and up in different tile formats
        ("IQ4_XS", "IQ4_XS", "Q6_K"),
        ("IQ1_S", "IQ1_S", "IQ2_XXS"),  # UD-IQ1_S
        ("IQ1_M", "IQ1_M", "Q2_K"),
        ("IQ2_XXS", "IQ2_XXS", "IQ3_XXS"),  # UD-IQ2_XXS
        ("IQ2_XS", "IQ2_S", "IQ3_S"),
        ("Q4_K", "Q4_K", "F32"),
    ],
    ids="-".join,
)
@pytest.mark.parametrize("T", [16, 17, 33, 300, 512])
def test_amx_moe(fmts, T, amx):
    """k=8 of 32 experts (upper half unused): from ~4 tokens per expert (some experts below the
    tile threshold, in the same call) to ~256 (several groups of 16 per row tile); an expert
    twice in a token's top-k, zero weights, a token with no expert."""
    experts = Experts(fmts, n_experts=32, hidden=512, inter=256, seed=T)
    rng = np.random.default_rng(T + 1)
    x = rng.standard_normal((T, 512)).astype(np.float32)
    ids, weights = routing(rng, T, 8, 32, repeat=True, zeros=True)
    check(experts, x, ids, weights)
