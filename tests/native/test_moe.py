"""The fused MoE experts call against a float64 numpy reference built from gguf.quants.dequantize.

Tolerance (rigorous, per output element), following the kernel's two quantization steps:
  e_x  = d_x / 2 (+ |x| 2^-22)              activation block quantization of x
  e_g  = |G| e_x + 2e-5 |G||x|, e_u alike  gate / up rows, plus float32 rounding
  e_h  = 1.1 e_g (|u| + e_u) + (|silu(g)| + 1.1 e_g) e_u     (|silu'| <= 1.1)
  e_hq = e_h + d_h / 2, d_h = (max |h| + e_h) / 127 per block  quantization of h
  |out - ref| <= sum_j |w_j| (|D| e_hq + 2e-5 |D||h|)
This worst-case bound is loose (it adds every rounding error with the same
sign), so two tight checks come with it:
* With F32 down weights nothing is quantized after x: against the same pipeline
  in float64 from the kernel's own x_hat (decoded from quantize_activations,
  verified in test_formats.py) only float32 rounding remains: 2e-5 sum |w D h|.
* For quantized down weights, against the same call composed from the verified
  matmul kernel per token and expert: gate/up outputs are bitwise the same, silu
  may differ by an ulp (numpy's expf), which can flip the rounding of a few h
  values by one quantization step d_h: budget one step, |D|_max d_h, per expert and output row
  (a 5 % change of one routing weight exceeds it).
"""

from __future__ import annotations

import os
import time

import moebox_native
import numpy as np
import pytest
from quant_blocks import block_geometry, has_amx_kernel, qtype, random_weights, reference_dequantize

REL = 2e-5


def silu(v):
    return v / (1.0 + np.exp(-v))


class Experts:
    def __init__(self, fmts: tuple[str, str, str], n_experts: int, hidden: int, inter: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        gf, uf, df = fmts
        self.shape = (n_experts, hidden, inter)
        self.gate = random_weights(gf, n_experts * inter, hidden, rng)
        self.up = random_weights(uf, n_experts * inter, hidden, rng)
        self.down = random_weights(df, n_experts * hidden, inter, rng)
        self.G = reference_dequantize(gf, self.gate, n_experts * inter, hidden).reshape(
            n_experts, inter, hidden
        )
        self.U = reference_dequantize(uf, self.up, n_experts * inter, hidden).reshape(
            n_experts, inter, hidden
        )
        self.D = reference_dequantize(df, self.down, n_experts * hidden, inter).reshape(
            n_experts, hidden, inter
        )
        self.act_block = {f: (block_geometry(f)[0] if f not in ("F32", "F16", "BF16") else 0) for f in fmts}
        self.fmts = fmts
        self.native = moebox_native.MoeExperts(
            self.gate,
            int(qtype(gf)),
            self.up,
            int(qtype(uf)),
            self.down,
            int(qtype(df)),
            n_experts,
            hidden,
            inter,
        )

    def reference(self, x, ids, weights):
        """(out, bound) float64 [T, hidden]."""
        T, k = ids.shape
        out = np.zeros((T, self.shape[1]))
        bound = np.zeros_like(out)
        x = x.astype(np.float64)
        for t in range(T):
            for j in range(k):
                e, w = ids[t, j], float(weights[t, j])
                if w == 0.0:
                    continue
                g, u = self.G[e] @ x[t], self.U[e] @ x[t]
                h = silu(g) * u
                out[t] += w * (self.D[e] @ h)
                eg = self._err(self.G[e], x[t], self.fmts[0])
                eu = self._err(self.U[e], x[t], self.fmts[1])
                eh = 1.1 * eg * (np.abs(u) + eu) + (np.abs(silu(g)) + 1.1 * eg) * eu
                ehq = eh + self._quant_step(np.abs(h) + eh, self.fmts[2]) / 2
                bound[t] += abs(w) * (np.abs(self.D[e]) @ ehq + REL * np.abs(self.D[e]) @ (np.abs(h) + eh))
        return out, bound

    def _quant_step(self, a, fmt):
        blk = self.act_block[fmt]
        if blk == 0:
            return np.zeros_like(a)
        return np.repeat(a.reshape(-1, blk).max(axis=1) / 127.0, blk) * (1 + 2**-10)  # fp16 scale of Q8_0

    def _err(self, W, x, fmt):
        ex = self._quant_step(np.abs(x), fmt) / 2 + np.abs(x) * 1e-6
        return np.abs(W) @ ex + REL * np.abs(W) @ np.abs(x)


def routing(rng, T, k, n_experts, *, repeat=False, zeros=False):
    ids = np.stack(
        [rng.choice(n_experts // 2, size=k, replace=k > n_experts // 2) for _ in range(T)]
    )  # upper half unused
    if repeat and k > 1:
        ids[:, 1] = ids[:, 0]  # the same expert twice in a token's top-k
    weights = rng.uniform(0.05, 1.0, size=(T, k)).astype(np.float32)
    if zeros:
        weights[rng.random((T, k)) < 0.3] = 0.0
        weights[0] = 0.0  # a token with no expert at all
    return ids.astype(np.int32), weights


def composed(experts, x, ids, weights):
    """(out, tolerance) of the same call built from native matmul per token and expert."""
    n_experts, hidden, inter = experts.shape
    gf, uf, df = (int(qtype(f)) for f in experts.fmts)
    gate = experts.gate.reshape(n_experts, inter, -1)
    up = experts.up.reshape(n_experts, inter, -1)
    down = experts.down.reshape(n_experts, hidden, -1)
    T, k = ids.shape
    out = np.zeros((T, hidden))
    tol = np.zeros_like(out)
    for t in range(T):
        for j in range(k):
            e, w = ids[t, j], float(weights[t, j])
            if w == 0.0:
                continue
            g = moebox_native.matmul(gate[e], gf, inter, hidden, x[t])
            u = moebox_native.matmul(up[e], uf, inter, hidden, x[t])
            with np.errstate(over="ignore"):  # exp(-g) = inf gives silu = -0, as in the kernel
                h = (g / (np.float32(1) + np.exp(-g))) * u  # float32 like the kernel
            d = moebox_native.matmul(down[e], df, hidden, inter, h)
            out[t] += w * d.astype(np.float64)
            d_h = experts._quant_step(np.abs(h).astype(np.float64), experts.fmts[2]).max()
            absd = np.abs(experts.D[e])
            tol[t] += abs(w) * (absd.max(axis=1) * d_h + REL * absd @ np.abs(h))
    return out, tol


def tight_reference(experts, x, ids, weights):
    """For F32 down weights: float64 pipeline from the kernel's own quantized x."""
    from quant_blocks import decode_activations

    fmt = {f["name"]: f for f in moebox_native.formats()}
    gf, uf, _ = experts.fmts
    xg, _ = decode_activations(
        fmt[gf]["vec_dot_type"], moebox_native.quantize_activations(x, int(qtype(gf))), x.shape[1]
    )
    xu, _ = decode_activations(
        fmt[uf]["vec_dot_type"], moebox_native.quantize_activations(x, int(qtype(uf))), x.shape[1]
    )
    T, k = ids.shape
    out = np.zeros((T, experts.shape[1]))
    mag = np.zeros_like(out)
    for t in range(T):
        for j in range(k):
            e, w = ids[t, j], float(weights[t, j])
            if w == 0.0:
                continue
            g, u = experts.G[e] @ xg[t], experts.U[e] @ xu[t]
            h = silu(g) * u
            hmag = np.abs(silu(g)) * (np.abs(experts.U[e]) @ np.abs(xu[t])) + np.abs(u) * (
                np.abs(experts.G[e]) @ np.abs(xg[t])
            )
            out[t] += w * (experts.D[e] @ h)
            mag[t] += abs(w) * (np.abs(experts.D[e]) @ (np.abs(h) + hmag))
    return out, REL * mag


def check(experts, x, ids, weights):
    out = experts.native.forward(x, ids, weights)
    ref, bound = experts.reference(x, ids, weights)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_array_less(np.abs(out - ref), bound + 1e-30)
    if experts.fmts[2] == "F32":
        ref, tol = tight_reference(experts, x, ids, weights)
    else:
        ref, tol = composed(experts, x, ids, weights)
    np.testing.assert_array_less(np.abs(out - ref), tol + 1e-30)
    return out


FORMAT_SETS = [
    ("Q4_K", "Q4_K", "Q6_K"),  # Q4_K_M experts
    ("Q2_K", "Q2_K", "Q3_K"),  # UD-Q2_K_XL style
    ("Q4_0", "Q8_0", "Q5_1"),  # 32-element formats, gate and up of different types
    ("F32", "F16", "Q5_K"),
    ("Q4_K", "Q4_K", "F32"),  # nothing quantized after x: the tight float64 check
    ("Q5_0", "Q4_1", "F32"),
]


@pytest.mark.parametrize("fmts", FORMAT_SETS, ids="-".join)
@pytest.mark.parametrize(("T", "k"), [(1, 1), (1, 8), (3, 2), (7, 8)])
def test_moe_small(fmts, T, k, isa):
    experts = Experts(fmts, n_experts=16, hidden=256, inter=256)
    rng = np.random.default_rng(T * 10 + k)
    x = rng.standard_normal((T, 256)).astype(np.float32)
    ids, weights = routing(rng, T, k, 16, repeat=T > 1, zeros=T == 7)
    check(experts, x, ids, weights)


@pytest.mark.parametrize(("T", "k"), [(33, 4), (300, 8), (64, 3)])
def test_moe_many_tokens(T, k):
    experts = Experts(
        ("Q4_K", "Q4_K", "F32" if T == 300 else "Q6_K"), n_experts=16, hidden=512, inter=256, seed=1
    )
    rng = np.random.default_rng(T)
    x = rng.standard_normal((T, 512)).astype(np.float32)
    ids, weights = routing(rng, T, k, 16, repeat=True, zeros=True)
    check(experts, x, ids, weights)


def test_moe_int64_ids_bf16_x_and_out():
    import torch

    experts = Experts(("Q4_K", "Q4_K", "Q6_K"), n_experts=8, hidden=256, inter=256, seed=2)
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((5, 256)).astype(np.float32)).to(torch.bfloat16)
    ids, weights = routing(rng, 5, 2, 8)
    out = torch.empty((5, 256))
    res = experts.native.forward(
        x, torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(weights), out=out
    )
    assert res is out
    ref = experts.native.forward(x.float().numpy(), ids, weights)
    np.testing.assert_array_equal(out.numpy(), ref)
    check(experts, x.float().numpy(), ids, weights)


def test_moe_1d_token():
    experts = Experts(("Q8_0", "Q8_0", "Q8_0"), n_experts=4, hidden=64, inter=96, seed=3)
    x = np.random.default_rng(4).standard_normal(64).astype(np.float32)
    out = experts.native.forward(x, np.array([2, 0], np.int32), np.array([0.7, 0.3], np.float32))
    assert out.shape == (64,)
    check(experts, x[None], np.array([[2, 0]], np.int32), np.array([[0.7, 0.3]], np.float32))


def test_moe_submit_is_asynchronous_and_matches_forward():
    experts = Experts(("Q4_K", "Q4_K", "Q6_K"), n_experts=16, hidden=512, inter=256, seed=4)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 512)).astype(np.float32)
    ids, weights = routing(rng, 40, 8, 16)
    expected = experts.native.forward(x, ids, weights)
    jobs = [experts.native.submit(x, ids, weights) for _ in range(3)]
    _ = np.linalg.norm(x @ x.T)  # the caller keeps working meanwhile
    for job in jobs:
        np.testing.assert_array_equal(job.wait(), expected)
        assert job.done()
    # the job keeps its inputs alive even if the caller drops them
    job = experts.native.submit(x.copy(), ids.copy(), weights.copy())
    np.testing.assert_array_equal(job.wait(), expected)


@pytest.mark.parametrize(
    ("ids", "weights", "match"),
    [
        (np.array([[0, 16]], np.int32), np.ones((1, 2), np.float32), "out of range"),
        (np.array([[-1, 0]], np.int64), np.ones((1, 2), np.float32), "out of range"),
        (np.array([[0, 1]], np.float32), np.ones((1, 2), np.float32), "int32 or int64"),
        (np.array([[0, 1]], np.int32), np.ones((1, 3), np.float32), "same k"),
        (np.array([[0, 1]], np.int32), np.ones((1, 2), np.float64), "float32"),
        (np.array([[0, 1], [1, 2]], np.int32), np.ones((2, 2), np.float32), "one row per token"),
    ],
)
def test_moe_bad_routing(ids, weights, match):
    experts = Experts(("Q8_0", "Q8_0", "Q8_0"), n_experts=16, hidden=64, inter=64)
    x = np.zeros((1, 64), np.float32)
    with pytest.raises(ValueError, match=match):
        experts.native.forward(x, ids, weights)
    with pytest.raises(ValueError, match=match):
        experts.native.submit(x, ids, weights)


def test_moe_bad_tensors():
    rng = np.random.default_rng(0)
    g = random_weights("Q4_K", 4 * 256, 256, rng)
    with pytest.raises(ValueError, match="bytes"):
        moebox_native.MoeExperts(
            g, int(qtype("Q4_K")), g, int(qtype("Q4_K")), g, int(qtype("Q4_K")), 4, 256, 512
        )
    with pytest.raises(ValueError, match="multiple of 256"):
        moebox_native.MoeExperts(
            g, int(qtype("Q4_K")), g, int(qtype("Q4_K")), g, int(qtype("Q4_K")), 4, 128, 512
        )
    with pytest.raises(ValueError, match="ggml type"):
        moebox_native.MoeExperts(g, 77, g, int(qtype("Q4_K")), g, int(qtype("Q4_K")), 4, 256, 256)


def test_thread_pool_idles_without_cpu():
    experts = Experts(("Q4_K", "Q4_K", "Q6_K"), n_experts=8, hidden=256, inter=256)
    x = np.ones((4, 256), np.float32)
    ids, weights = routing(np.random.default_rng(0), 4, 2, 8)
    experts.native.forward(x, ids, weights)  # pool is up
    time.sleep(0.05)  # past the short spin
    before = os.times()
    time.sleep(1.0)
    after = os.times()
    used = (after.user - before.user) + (after.system - before.system)
    assert used < 0.1, f"idle kernel threads used {used:.2f} s of CPU in 1 s"


@pytest.mark.parametrize("fmts", FORMAT_SETS[:3], ids="-".join)
def test_moe_batch_matches_single_tokens(fmts, isa):
    """Grouped tokens (several per expert, prefill kernels) give bitwise the per-token results."""
    if isa == "amx" and any(has_amx_kernel(f) for f in fmts):
        pytest.skip(
            "AMX tiles sum in their own order (within float32 rounding, test_amx.py), not bitwise the GEMV"
        )
    experts = Experts(fmts, n_experts=4, hidden=256, inter=256, seed=6)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((13, 256)).astype(np.float32)
    ids, weights = routing(rng, 13, 2, 4)  # 13 tokens over 2 experts: several per expert
    out = experts.native.forward(x, ids, weights)
    for t in range(13):
        np.testing.assert_array_equal(out[t], experts.native.forward(x[t], ids[t], weights[t]))
