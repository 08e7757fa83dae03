"""`moebox bench kernels`: two ISA levels timed in turns, the active level restored."""

from __future__ import annotations

import numpy as np
import pytest

moebox_native = pytest.importorskip("moebox_native")

from engine.tools.bench_kernels import QWEN3_30B_A3B, _at_levels, bench_gemm, bench_moe, make_moe  # noqa: E402


def test_levels_take_turns_and_the_active_level_comes_back():
    active = moebox_native.isa()
    seen = _at_levels(moebox_native, ("scalar", None), lambda isa: (isa, moebox_native.isa()))
    assert seen == [("scalar", "scalar"), (None, active)]
    assert moebox_native.isa() == active


def test_active_level_comes_back_when_a_timing_fails():
    active = moebox_native.isa()

    def boom(_):
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError):
        _at_levels(moebox_native, ("scalar",), boom)
    assert moebox_native.isa() == active


def test_gemm_and_moe_give_one_timing_per_level():
    rng = np.random.default_rng(0)
    times = bench_gemm(moebox_native, "Q4_K", 16, 256, 4, 2, rng, ("scalar", None))
    assert len(times) == 2 and all(t > 0 for t in times)
    moe, per_expert = make_moe(moebox_native, QWEN3_30B_A3B, 8, "Q4_K", rng)
    timings = bench_moe(moebox_native, moe, per_expert, QWEN3_30B_A3B, 8, 2, 1, rng, ("scalar", None))
    assert len(timings) == 2 and all(s > 0 and gbs > 0 for s, gbs in timings)
