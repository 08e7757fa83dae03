"""Bad input to the binding raises ValueError (or RuntimeError for a missing ISA), never crashes."""

from __future__ import annotations

import os
import subprocess
import sys

import moebox_native
import numpy as np
import pytest
from quant_blocks import qtype, random_weights

Q4_K = int(qtype("Q4_K"))


@pytest.fixture
def w():
    return random_weights("Q4_K", 4, 512, np.random.default_rng(0))


def test_unknown_format(w):
    with pytest.raises(ValueError, match="ggml type 99"):
        moebox_native.matmul(w, 99, 4, 512, np.zeros((1, 512), np.float32))
    with pytest.raises(ValueError):
        moebox_native.dequantize(w, int(qtype("Q8_1")), np.zeros(2048, np.float32))


@pytest.mark.parametrize(
    ("rows", "cols", "x", "match"),
    [
        (4, 500, np.zeros((1, 500), np.float32), "multiple of 256"),
        (5, 512, np.zeros((1, 512), np.float32), "bytes"),
        (4, 512, np.zeros((1, 256), np.float32), "columns"),
        (4, 512, np.zeros((1, 512), np.float64), "float32 or bfloat16"),
        (4, 512, np.zeros((2, 1024), np.float32)[:, ::2], "contiguous"),
        (4, 512, np.zeros((1, 1, 512), np.float32), "1-D or 2-D"),
        (0, 512, np.zeros((1, 512), np.float32), "positive"),
    ],
)
def test_matmul_bad_shapes(w, rows, cols, x, match):
    with pytest.raises(ValueError, match=match):
        moebox_native.matmul(w, Q4_K, rows, cols, x)


def test_matmul_bad_out(w):
    x = np.zeros((2, 512), np.float32)
    with pytest.raises(ValueError, match="elements"):
        moebox_native.matmul(w, Q4_K, 4, 512, x, out=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="float32"):
        moebox_native.matmul(w, Q4_K, 4, 512, x, out=np.zeros((2, 4), np.float64))
    ro = np.zeros((2, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        moebox_native.matmul(w, Q4_K, 4, 512, x, out=ro)


def test_dequantize_bad_out(w):
    with pytest.raises(ValueError, match="elements"):
        moebox_native.dequantize(w, Q4_K, np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="whole number"):
        moebox_native.dequantize(w.reshape(-1)[:100], Q4_K, np.zeros(256, np.float32))


def test_set_isa_unknown():
    with pytest.raises(ValueError, match="unknown ISA"):
        moebox_native.set_isa("sse9")


def _run_with_isa(value: str) -> subprocess.CompletedProcess:
    code = "import moebox_native, numpy as np; print(moebox_native.isa())"
    env = dict(os.environ, MOEBOX_ISA=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_moebox_isa_env_forces_level():
    r = _run_with_isa("scalar")
    assert r.returncode == 0 and r.stdout.strip() == "scalar"
    r = _run_with_isa("bogus")
    assert r.returncode != 0 and "unknown ISA 'bogus'" in r.stderr


def _cpu_levels() -> list[str]:
    f = moebox_native.cpu_features()
    levels = ["scalar"]
    if f["avx2"] and f["fma"] and f["f16c"]:
        levels.append("avx2")
        if f["avx512f"] and f["avx512bw"] and f["avx512vl"] and f["avx512_vnni"]:
            levels.append("avx512")
            if f["amx_tile"] and f["amx_int8"] and f["amx_permitted"]:
                levels.append("amx")
    return levels


def test_moebox_isa_env_missing_on_cpu():
    levels = _cpu_levels()
    if len(levels) == 4:
        pytest.skip("this CPU has every level")
    higher = ["scalar", "avx2", "avx512", "amx"][len(levels)]
    r = _run_with_isa(higher)
    assert r.returncode != 0 and f"MOEBOX_ISA={higher} was requested" in r.stderr


def test_best_isa_is_a_level_the_cpu_has():
    assert moebox_native.best_isa() in _cpu_levels()
