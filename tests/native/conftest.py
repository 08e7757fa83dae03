import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import moebox_native  # noqa: E402  (a missing build must fail, not skip)


def available_isas() -> list[str]:
    """ISA levels this CPU runs, lowest first (AVX-512 / AMX only where present)."""
    order = ["scalar", "avx2", "avx512", "amx"]
    best = moebox_native.best_isa()
    return order[: order.index(best) + 1]


@pytest.fixture(params=available_isas())
def isa(request):
    """Runs the test once per ISA level of this machine, forced via set_isa."""
    before = moebox_native.isa()
    moebox_native.set_isa(request.param)
    yield request.param
    moebox_native.set_isa(before)
