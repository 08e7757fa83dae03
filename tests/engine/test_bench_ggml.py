"""Reading ggml's test-backend-ops perf output for `moebox bench kernels --ggml`."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from engine.errors import GgmlBenchError
from engine.tools.bench_ggml import GgmlCase, ggml_type_name, parse_perf_output, perf_filter, run_perf
from engine.tools.bench_kernels import (
    DEFAULT_FORMATS,
    QWEN3_30B_A3B,
    _ggml_moe_us,
    _moe_cases,
    _runs_per_draw,
)

# Captured verbatim (colour codes included) from test-backend-ops of llama-cpp-python 0.3.36's
# llama.cpp, built by scripts/build-ggml-bench on a 2-core AMD EPYC (AVX2), with
#   GGML_BENCH_THREADS=2 test-backend-ops perf -b CPU -o MUL_MAT,MUL_MAT_ID \
#     -p '^type_a=(q4_K|iq1_s),type_b=f32,(m=7168,n=1,k=2048,bs=\[1,1\],nr=\[1,1\],|n_mats=128,n_used=8,b=.,m=768,n=1,k=2048,)'
SAMPLE = """Testing 1 devices

  ggml threads: 2
Backend 1/1: CPU
  Device description: AMD EPYC
  Device memory: 24105 MB (24105 MB free)

  MUL_MAT(type_a=q4_K,type_b=f32,m=7168,n=1,k=2048,bs=[1,1],nr=[1,1],per=[0,1,2,3],k_v=0,o=1,src_overlap=0,m_v=0,pad=0):                 273 runs - 11956.02 us/run -  29.36 MFLOP/run - \x1b[1;34m  2.46 GFLOPS\x1b[0m
  MUL_MAT_ID(type_a=q4_K,type_b=f32,n_mats=128,n_used=8,b=1,m=768,n=1,k=2048,amax=1.000000,m_v=0):               318 runs -  9899.33 us/run -  25.17 MFLOP/run - \x1b[1;34m  2.54 GFLOPS\x1b[0m
  MUL_MAT(type_a=iq1_s,type_b=f32,m=7168,n=1,k=2048,bs=[1,1],nr=[1,1],per=[0,1,2,3],k_v=0,o=1,src_overlap=0,m_v=0,pad=0):                273 runs -  6005.01 us/run -  29.36 MFLOP/run - \x1b[1;34m  4.89 GFLOPS\x1b[0m
  MUL_MAT_ID(type_a=iq1_s,type_b=f32,n_mats=128,n_used=8,b=1,m=768,n=1,k=2048,amax=1.000000,m_v=0):                      318 runs -  3504.63 us/run -  25.17 MFLOP/run - \x1b[1;34m  7.18 GFLOPS\x1b[0m
  MUL_MAT_ID(type_a=q4_K,type_b=f32,n_mats=128,n_used=8,b=0,m=768,n=1,k=2048,amax=1.000000,m_v=0):               318 runs -  6317.35 us/run -  25.17 MFLOP/run - \x1b[1;34m  3.98 GFLOPS\x1b[0m
  Backend CPU: \x1b[1;32mOK\x1b[0m
1/1 backends passed
\x1b[1;32mOK\x1b[0m
"""

Q4K_GEMV = GgmlCase("MUL_MAT", "q4_K", 7168, 1, 2048)
Q4K_QWEN_GATE = GgmlCase("MUL_MAT_ID", "q4_K", 768, 1, 2048, 128, 8, True)
Q4K_QWEN_GATE_PER_ROW = GgmlCase("MUL_MAT_ID", "q4_K", 768, 1, 2048, 128, 8, False)


def test_parse_captured_output():
    run = parse_perf_output(SAMPLE)
    assert run.threads == 2
    assert run.device == "AMD EPYC"
    assert len(run.timings) == 5 and not run.unsupported
    t = run.timings[Q4K_GEMV]
    assert (t.us_per_run, t.runs, t.gflops) == (11956.02, 273, 2.46)
    assert run.us(Q4K_QWEN_GATE) == 9899.33
    assert run.us(Q4K_QWEN_GATE_PER_ROW) == 6317.35  # b=0 is another case than b=1
    assert run.us(GgmlCase("MUL_MAT_ID", "iq1_s", 768, 1, 2048, 128, 8, True)) == 3504.63
    assert run.us(GgmlCase("MUL_MAT", "q4_K", 2048, 1, 7168)) is None


def test_flop_counts_agree_with_ggml():
    # ggml prints MFLOP per run; our case arithmetic must give the same figure.
    run = parse_perf_output(SAMPLE)
    for case, timing in run.timings.items():
        assert case.flops / 1e6 == pytest.approx(timing.gflops * 1e3 * timing.us_per_run / 1e6, rel=0.01)
    assert Q4K_GEMV.flops == 29_360_128 and Q4K_QWEN_GATE.flops == 25_165_824


def test_repeat_cadence_is_ggmls():
    # test-backend-ops repeats an op n_runs times per graph; the total it prints is a multiple
    # of that (one graph here, on a slow machine). Our timing loop copies the cadence.
    run = parse_perf_output(SAMPLE)
    for case, timing in run.timings.items():
        assert timing.runs % _runs_per_draw(case.flops) == 0
    assert _runs_per_draw(Q4K_GEMV.flops) == 273


def test_unsupported_and_unrelated_lines():
    text = (
        "  MUL_MAT(type_a=iq1_m,type_b=f32,m=2048,n=1,k=7168,bs=[1,1],nr=[1,1],per=[0,1,2,3],k_v=0,o=1): not supported\n"
        "  ADD(type=f32,ne=[4096,1,1,1],nr=[1,512,1,1],nf=1):   1 runs -    12.00 us/run -  16 kB/run -   1.20 GB/s\n"
        "  MUL_MAT(type_a=f16,type_b=f32,m=16416,n=1,k=128,bs=[8,1],nr=[4,1],per=[0,2,1,3],k_v=0,o=1):"
        "   3 runs - 5.00 us/run - 1.00 GFLOP/run - \x1b[1;34m  1.20 TFLOPS\x1b[0m\n"
    )
    run = parse_perf_output(text)
    assert run.threads is None and not run.timings
    assert run.unsupported == [GgmlCase("MUL_MAT", "iq1_m", 2048, 1, 7168)]


def test_moe_call_is_gate_up_and_down():
    text = SAMPLE.replace(
        "n_mats=128,n_used=8,b=0,m=768,n=1,k=2048", "n_mats=128,n_used=8,b=0,m=2048,n=1,k=768"
    )
    run = parse_perf_output(text)
    gate, down = _moe_cases("Q4_K", QWEN3_30B_A3B, 128, 1)
    assert gate == Q4K_QWEN_GATE
    assert _ggml_moe_us(run, "Q4_K", QWEN3_30B_A3B, 128, 1) == pytest.approx(2 * 9899.33 + 6317.35)
    assert _ggml_moe_us(run, "Q4_K", QWEN3_30B_A3B, 128, 512) is None


def test_filter_selects_the_asked_cases():
    ops, params = perf_filter([Q4K_GEMV, Q4K_QWEN_GATE, GgmlCase("MUL_MAT", "iq1_s", 7168, 1, 2048)])
    assert ops == "MUL_MAT,MUL_MAT_ID"
    vars_of = re.compile(r"^\s*([A-Z_]+)\((.*)\):", re.M)
    selected = {(op, v) for op, v in vars_of.findall(SAMPLE) if re.search(params, v)}
    # every asked type with every asked shape: GEMV and gate (b=1) of q4_K and iq1_s; never b=0
    assert len(selected) == 4
    assert not any("b=0" in v for _, v in selected)
    assert not re.search(params, "type_a=q4_K,type_b=f32,m=7168,n=1,k=2048,bs=[2,1],nr=[1,1],")


def test_type_names_are_ggmls():
    # ggml's type_traits[].type_name for every format the kernel bench covers
    ggml_names = [
        "q4_K",
        "q2_K",
        "q3_K",
        "q5_K",
        "q6_K",
        "q8_0",
        "q4_0",
        "q4_1",
        "q5_0",
        "q5_1",
        "bf16",
        "f16",
        "iq1_s",
        "iq1_m",
        "iq2_xxs",
        "iq2_xs",
        "iq2_s",
        "iq3_xxs",
        "iq3_s",
        "iq4_nl",
        "iq4_xs",
    ]
    assert [ggml_type_name(f) for f in DEFAULT_FORMATS] == ggml_names


def test_missing_binary_says_how_to_build(tmp_path):
    with pytest.raises(GgmlBenchError, match="scripts/build-ggml-bench"):
        run_perf(tmp_path / "test-backend-ops", [Q4K_GEMV], threads=1)


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_broken_binary_is_a_clear_error(tmp_path):
    exe = _script(tmp_path / "test-backend-ops", "echo 'Illegal instruction' >&2\nexit 132\n")
    with pytest.raises(GgmlBenchError, match=r"status 132.*\n.*Illegal instruction"):
        run_perf(exe, [Q4K_GEMV], threads=1)


def test_binary_without_timings_is_a_clear_error(tmp_path):
    exe = _script(tmp_path / "test-backend-ops", "echo 'Testing 0 devices'\n")
    with pytest.raises(GgmlBenchError, match="no usable timings"):
        run_perf(exe, [Q4K_GEMV], threads=1)


def test_run_passes_threads_and_filters(tmp_path):
    sample = tmp_path / "sample.txt"
    sample.write_text(SAMPLE)
    exe = _script(
        tmp_path / "test-backend-ops",
        f'echo "$GGML_BENCH_THREADS" > {tmp_path}/threads\nprintf "%s\\n" "$@" > {tmp_path}/args\ncat {sample}\n',
    )
    run = run_perf(exe, [Q4K_GEMV], threads=3)
    assert (tmp_path / "threads").read_text().strip() == "3"
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:5] == ["perf", "-b", "CPU", "-o", "MUL_MAT"]
    assert args[5] == "-p" and re.search(
        args[6], "type_a=q4_K,type_b=f32,m=7168,n=1,k=2048,bs=[1,1],nr=[1,1],"
    )
    assert run.us(Q4K_GEMV) == 11956.02


@pytest.mark.skipif(
    not os.environ.get("MOEBOX_GGML_BENCH"),
    reason="set MOEBOX_GGML_BENCH to a test-backend-ops built by scripts/build-ggml-bench",
)
def test_real_binary_times_a_case():
    case = GgmlCase("MUL_MAT", "q8_0", 7168, 1, 2048)
    run = run_perf(os.environ["MOEBOX_GGML_BENCH"], [case], threads=1)
    assert run.threads == 1
    assert set(run.timings) == {case} and run.us(case) > 0
