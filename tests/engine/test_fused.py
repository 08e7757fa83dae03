"""The fused CPU ops of engine/layers/fused.py against the torch expressions they replace.

Reference values are computed in float64 by torch. Tolerances: the native ops
sum in float32 in another order than torch (rms_norm over 576-2048 values,
attention over up to 300 positions) and use a polynomial exp within 2 ulp, so
results agree to a few float32 ulps of the magnitudes involved; 2e-6 relative
(≈ 17 ulp) plus 1e-6 absolute leaves room for that and nothing more.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.layers import fused
from engine.layers.rotary_embedding import RotaryEmbedding
from engine.native import cpu_kernels

RTOL, ATOL = 2e-6, 1e-6

pytestmark = pytest.mark.skipif(cpu_kernels() is None, reason="native kernels not built")


@pytest.fixture(params=["scalar", "avx2"])
def isa(request):
    native = cpu_kernels()
    before = native.isa()
    native.set_isa(request.param)
    yield request.param
    native.set_isa(before)


@pytest.mark.parametrize("rows,n", [(1, 576), (5, 2048), (3, 20)])
def test_rms_norm(isa, rows, n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(rows, n, generator=g) * 3
    w = torch.randn(n, generator=g)
    got = fused.native_rms_norm(x, w, 1e-5)
    x64 = x.double()
    ref = x64 * torch.rsqrt(x64.square().mean(-1, keepdim=True) + 1e-5) * w.double()
    torch.testing.assert_close(got.double(), ref, rtol=RTOL, atol=ATOL)


def test_rms_norm_strided_rows(isa):
    x = torch.randn(4, 96)
    got = fused.native_rms_norm(x[:, :64], torch.ones(64), 1e-6)
    torch.testing.assert_close(
        got, torch.rms_norm(x[:, :64], (64,), torch.ones(64), 1e-6), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("rows,n", [(1, 1536), (3, 20)])
def test_silu_mul(isa, rows, n):
    g = torch.Generator().manual_seed(n)
    gate_up = torch.randn(rows, 2 * n, generator=g) * 6
    gate_up[0, :4] = torch.tensor([-100.0, 100.0, 0.0, -30.0])  # exp's clamp range and zero
    got = fused.native_silu_mul(gate_up)
    gu = gate_up.double()
    ref = F.silu(gu[:, :n]) * gu[:, n:]
    torch.testing.assert_close(got.double(), ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("interleaved", [True, False])
def test_rope_in_place_equals_apply(interleaved):
    rope = RotaryEmbedding(64, 10000.0, interleaved=interleaved)
    positions = torch.tensor([0, 7, 300])
    qkv = torch.randn(3, 15 * 64)
    qk = qkv[:, : 12 * 64].reshape(3, 12, 64)  # a strided view, as attention passes it
    ref = rope.apply(qk.clone(), positions)
    out = fused.native_rope_(rope, qk, positions)
    assert out.data_ptr() == qkv.data_ptr()  # rotated where it was
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("length", [1, 13, 300])
@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (4, 4)])
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.float16])
def test_attend_one(isa, length, heads, kv_heads, kv_dtype):
    dim = 64
    g = torch.Generator().manual_seed(length)
    q = torch.randn(heads, dim, generator=g)
    cache = torch.randn(length + 5, 2, kv_heads, dim, generator=g).to(kv_dtype)
    k, v = cache[:length, 0], cache[:length, 1]  # strided cache views
    scale = dim**-0.5
    got = fused.native_attend_one(q, k, v, scale)
    rep = heads // kv_heads
    kd = k.double().repeat_interleave(rep, dim=1).transpose(0, 1)  # [heads, S, dim]
    vd = v.double().repeat_interleave(rep, dim=1).transpose(0, 1)
    probs = torch.softmax(torch.einsum("hd,hsd->hs", q.double(), kd) * scale, dim=-1)
    ref = torch.einsum("hs,hsd->hd", probs, vd).reshape(1, heads * dim)
    torch.testing.assert_close(got.double(), ref, rtol=RTOL, atol=ATOL)


def test_torch_expressions_serve_other_dtypes():
    """The torch set (what runs on the GPU) has the same meaning, in bf16 too."""
    q = torch.randn(9, 64)
    k, v = torch.randn(10, 3, 64), torch.randn(10, 3, 64)
    ref = fused.native_attend_one(q, k, v, 0.125)
    torch.testing.assert_close(fused.torch_attend_one(q, k, v, 0.125), ref, rtol=1e-5, atol=1e-6)
    got = fused.torch_attend_one(q.bfloat16(), k.bfloat16(), v.bfloat16(), 0.125)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, rtol=0.05, atol=0.05)
    gate_up = torch.randn(2, 40)
    torch.testing.assert_close(
        fused.torch_silu_mul(gate_up.bfloat16()).float(), fused.native_silu_mul(gate_up), rtol=0.02, atol=0.02
    )
    x, w = torch.randn(3, 40), torch.randn(40)
    torch.testing.assert_close(
        fused.torch_rms_norm(x, w, 1e-5), fused.native_rms_norm(x, w, 1e-5), rtol=RTOL, atol=ATOL
    )


def test_ops_are_chosen_by_device():
    assert fused.ops_for("cpu") is fused.NATIVE_OPS
    assert fused.ops_for(torch.device("cuda", 0)) is fused.TORCH_OPS


def test_bad_shapes_are_value_errors():
    native = cpu_kernels()
    with pytest.raises(ValueError):
        native.attend_one(
            torch.randn(9, 64).numpy(),
            torch.randn(5, 2, 64).numpy(),
            torch.randn(5, 2, 64).numpy(),
            1.0,
            torch.empty(9 * 64).numpy(),
        )
    with pytest.raises(ValueError):
        native.rope(
            torch.randn(1, 2, 64).numpy(),
            torch.randn(4, 32).numpy(),
            torch.randn(4, 32).numpy(),
            torch.tensor([4]).numpy(),
            True,
        )


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("interleaved", [True, False])
def test_rope_cache_attend_equals_the_torch_steps(isa, cache_dtype, interleaved):
    """The fused decode step against rope.apply → cache.update → softmax attention in torch,
    over a cache that already holds 40 tokens; the cache entry written must match too."""
    from engine.kv_cache import KVCache

    heads, kv_heads, dim, length = 9, 3, 64, 40
    g = torch.Generator().manual_seed(3)
    rope = RotaryEmbedding(dim, 10000.0, interleaved=interleaved)
    caches = [KVCache(1, 64, dtype=cache_dtype) for _ in range(2)]
    history = torch.randn(length, 2, kv_heads, dim, generator=g)
    for c in caches:
        c.update(0, history[:, 0], history[:, 1])
        c.advance(length)
    qkv = torch.randn(1, (heads + 2 * kv_heads) * dim, generator=g)
    positions = torch.tensor([length])

    ref_qk = rope.apply(qkv[:, : (heads + kv_heads) * dim].reshape(1, heads + kv_heads, dim), positions)
    ref_v = qkv[:, (heads + kv_heads) * dim :].reshape(1, kv_heads, dim)
    k_all, v_all = caches[0].update(0, ref_qk[:, heads:], ref_v)
    rep = heads // kv_heads
    kd = k_all.double().repeat_interleave(rep, dim=1).transpose(0, 1)
    vd = v_all.double().repeat_interleave(rep, dim=1).transpose(0, 1)
    probs = torch.softmax(torch.einsum("hd,hsd->hs", ref_qk[0, :heads].double(), kd) * dim**-0.5, dim=-1)
    ref = torch.einsum("hs,hsd->hd", probs, vd).reshape(1, heads * dim)

    got = fused.native_rope_cache_attend(
        qkv.clone(), rope, positions, caches[1], 0, heads, kv_heads, dim, dim**-0.5
    )
    torch.testing.assert_close(got.double(), ref, rtol=RTOL, atol=ATOL)
    k_got, v_got = (b[: length + 1] for b in caches[1].reserve(0, 0, (kv_heads, dim), (kv_heads, dim)))
    torch.testing.assert_close(k_got, k_all, rtol=RTOL, atol=ATOL)  # same f16 rounding of the new entry
    torch.testing.assert_close(v_got, v_all, rtol=0, atol=0)


def test_rope_cache_attend_declines_what_it_cannot_run():
    from engine.kv_cache import KVCache

    rope = RotaryEmbedding(64, 10000.0, interleaved=True)
    qkv = torch.randn(1, 15 * 64)
    assert (
        fused.native_rope_cache_attend(
            qkv, rope, torch.tensor([0]), KVCache(1, 8, dtype=torch.bfloat16), 0, 9, 3, 64, 0.1
        )
        is None
    )
    assert (
        fused.torch_rope_cache_attend(qkv, rope, torch.tensor([0]), KVCache(1, 8), 0, 9, 3, 64, 0.1) is None
    )
