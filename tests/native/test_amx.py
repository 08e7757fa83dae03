"""AMX tile kernels (prefill: matmul and MoE experts with >= 4 tokens per weight row).

They run only where the CPU has AMX (and Linux granted the tile state); elsewhere
every test here skips and says so.

Tolerance: the tile kernels compute the same integer sums as the vec_dot (per
32-element sub-block, exact in int32: TDPBUSD products of 4-bit weights and
int8 activations, scaled per row in integers) and then one float32 product and
fused add per super-block, like the vec_dot; only the order of the float
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


def test_q4_K_has_a_tile_kernel():
    entry = next(f for f in moebox_native.formats() if f["name"] == "Q4_K")
    assert "amx" in entry["isas"]


@pytest.mark.parametrize("tokens", [4, 16, 17, 33, 300, 512])
@pytest.mark.parametrize("rows", [37, 64])
def test_amx_matmul_q4_K(tokens, rows, amx):
    rng = np.random.default_rng(tokens * 7 + rows)
    cols = 256 * 3
    w = random_weights("Q4_K", rows, cols, rng)
    x = (rng.standard_normal((tokens, cols)) * rng.uniform(0.1, 3.0, size=(tokens, 1))).astype(np.float32)
    check_matmul("Q4_K", w, rows, cols, x)


def test_amx_matmul_runs_the_tile_kernel(amx):
    """The tiles add in another order than the AVX-512 dot, so some output differs in its
    last bits; if every one matched bitwise, the AMX level would be running the AVX-512 code."""
    rng = np.random.default_rng(3)
    rows, cols, tokens = 48, 2048, 64
    w = random_weights("Q4_K", rows, cols, rng)
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    t = int(qtype("Q4_K"))
    y_amx = moebox_native.matmul(w, t, rows, cols, x)
    moebox_native.set_isa("avx512")
    y_avx512 = moebox_native.matmul(w, t, rows, cols, x)
    assert not np.array_equal(y_amx, y_avx512)
    np.testing.assert_allclose(y_amx, y_avx512, rtol=1e-4, atol=1e-4 * np.abs(y_avx512).max())


@pytest.mark.parametrize(
    "fmts", [("Q4_K", "Q4_K", "Q4_K"), ("Q4_K", "Q4_K", "Q6_K"), ("Q4_K", "Q4_K", "F32")], ids="-".join
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
