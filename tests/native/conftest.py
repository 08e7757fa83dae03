import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import moebox_native  # noqa: E402  (a missing build must fail, not skip)
from quant_blocks import available_isas  # noqa: E402


@pytest.fixture(params=available_isas())
def isa(request):
    """Runs the test once per ISA level of this machine, forced via set_isa."""
    before = moebox_native.isa()
    moebox_native.set_isa(request.param)
    yield request.param
    moebox_native.set_isa(before)
