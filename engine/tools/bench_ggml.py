"""ggml's CPU speed on moebox's kernel shapes, read from llama.cpp's test-backend-ops.

test-backend-ops' perf mode (`test-backend-ops perf -b CPU -o MUL_MAT,MUL_MAT_ID -p REGEX`)
times one ggml op per line: the same weights computed back to back (several hundred times
per graph for a GEMV) for at least a second, reported as microseconds per run. For
MUL_MAT_ID the expert ids are drawn again between graph runs. `scripts/build-ggml-bench`
builds it with perf cases for the shapes below and a settable thread count.

Shapes use ggml's names: m = output rows, k = row length, n = tokens. A MoE expert FFN of
hidden h and intermediate f is gate and up (m=f, k=h, one activation row broadcast to the
chosen experts) and down (m=h, k=f, one row per chosen expert).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import GgmlBenchError

# The formats the comparison covers by default: what DeepSeek-V3/R1 and Qwen3 MoE GGUFs use.
GGML_FORMATS = ["Q4_K", "Q2_K", "IQ1_S", "Q6_K", "Q8_0", "Q4_1", "Q3_K", "IQ1_M", "IQ2_XXS"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PERF_LINE = re.compile(
    r"^\s*(?P<op>[A-Z0-9_]+)\((?P<params>.*)\):\s+"
    r"(?:(?P<unsupported>not supported)|"
    r"(?P<runs>\d+) runs - +(?P<us>[0-9.]+) us/run - +(?P<rest>.*))\s*$"
)
_RATE = re.compile(r"(?P<value>[0-9.]+) (?P<unit>[kMGT])FLOPS")
_PARAM = re.compile(r"(\w+)=(\[[^\]]*\]|[^,]*)")
_THREADS = re.compile(r"^\s*ggml threads: (\d+)\s*$")
_DEVICE = re.compile(r"^\s*Device description: (.*?)\s*$")
_FLOP_UNIT = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def ggml_type_name(fmt: str) -> str:
    """ggml's spelling of a GGUF type name: Q4_K -> q4_K, IQ2_XXS -> iq2_xxs, BF16 -> bf16."""
    name = fmt.lower()
    return name[:-2] + "_K" if name.endswith("_k") else name


@dataclass(frozen=True)
class GgmlCase:
    """One timed op of the perf run. experts/used/broadcast are 0/0/False for MUL_MAT."""

    op: str
    type_name: str
    m: int
    n: int
    k: int
    experts: int = 0
    used: int = 0
    broadcast: bool = False

    @property
    def flops(self) -> int:
        """Floating-point operations of one run, counted as test-backend-ops does."""
        return 2 * self.m * self.n * self.k * (self.used or 1)


@dataclass(frozen=True)
class GgmlTiming:
    case: GgmlCase
    us_per_run: float
    runs: int
    gflops: float


@dataclass
class GgmlPerfRun:
    """What one test-backend-ops perf run reported."""

    threads: int | None  # None: a binary without the thread patch (upstream uses hardware threads / 2)
    device: str
    timings: dict[GgmlCase, GgmlTiming] = field(default_factory=dict)
    unsupported: list[GgmlCase] = field(default_factory=list)

    def us(self, case: GgmlCase) -> float | None:
        t = self.timings.get(case)
        return None if t is None else t.us_per_run


def _params(text: str) -> dict[str, str]:
    return {key: value for key, value in _PARAM.findall(text)}


def _case(op: str, params: str) -> GgmlCase | None:
    p = _params(params)
    try:
        if op == "MUL_MAT":
            if p.get("type_b") != "f32" or p.get("bs", "[1,1]") != "[1,1]" or p.get("nr", "[1,1]") != "[1,1]":
                return None
            return GgmlCase(op, p["type_a"], int(p["m"]), int(p["n"]), int(p["k"]))
        if op == "MUL_MAT_ID":
            if p.get("type_b") != "f32" or p.get("m_v", "0") != "0":
                return None
            return GgmlCase(
                op,
                p["type_a"],
                int(p["m"]),
                int(p["n"]),
                int(p["k"]),
                int(p["n_mats"]),
                int(p["n_used"]),
                p["b"] == "1",
            )
    except (KeyError, ValueError):
        return None
    return None


def parse_perf_output(text: str) -> GgmlPerfRun:
    """Parse test-backend-ops perf console output (colour codes and all). Lines of other ops,
    and MUL_MAT cases with batch broadcasting or permutations, are skipped."""
    run = GgmlPerfRun(threads=None, device="")
    for raw in text.splitlines():
        line = _ANSI.sub("", raw)
        if m := _THREADS.match(line):
            run.threads = int(m.group(1))
            continue
        if m := _DEVICE.match(line):
            run.device = m.group(1)
            continue
        m = _PERF_LINE.match(line)
        if not m:
            continue
        case = _case(m.group("op"), m.group("params"))
        if case is None:
            continue
        if m.group("unsupported"):
            run.unsupported.append(case)
            continue
        rate = _RATE.search(m.group("rest"))
        gflops = float(rate.group("value")) * _FLOP_UNIT[rate.group("unit")] / 1e9 if rate else 0.0
        run.timings[case] = GgmlTiming(case, float(m.group("us")), int(m.group("runs")), gflops)
    return run


def perf_filter(cases: list[GgmlCase]) -> tuple[str, str]:
    """(-o ops, -p params regex) selecting these cases: every type given with every shape given
    (the regex stays short; std::regex is slow on long alternations)."""
    ops = ",".join(sorted({c.op for c in cases}))
    types = sorted({c.type_name for c in cases})
    shapes = set()
    for c in cases:
        if c.op == "MUL_MAT":
            shapes.add(f"m={c.m},n={c.n},k={c.k},bs=\\[1,1\\],nr=\\[1,1\\],")
        else:
            shapes.add(f"n_mats={c.experts},n_used={c.used},b={int(c.broadcast)},m={c.m},n={c.n},k={c.k},")
    return ops, f"^type_a=({'|'.join(types)}),type_b=f32,({'|'.join(sorted(shapes))})"


def require_binary(binary: str | os.PathLike) -> Path:
    """The path, if it is an executable file; else a GgmlBenchError that says how to get one."""
    path = Path(binary)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise GgmlBenchError(
            f"no test-backend-ops program at {path}: build one with scripts/build-ggml-bench "
            "and pass the path it prints to --ggml"
        )
    return path


def run_perf(
    binary: str | os.PathLike, cases: list[GgmlCase], threads: int, timeout: float = 3600
) -> GgmlPerfRun:
    """Run test-backend-ops perf on the CPU backend for these cases with `threads` threads."""
    path = require_binary(binary)
    ops, params = perf_filter(cases)
    cmd = [str(path), "perf", "-b", "CPU", "-o", ops, "-p", params]
    env = dict(os.environ, GGML_BENCH_THREADS=str(threads))
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace", timeout=timeout)
    except OSError as exc:
        raise GgmlBenchError(
            f"could not run {path}: {exc}; rebuild it with scripts/build-ggml-bench"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise GgmlBenchError(f"{path} ran longer than {timeout:.0f} s; pass fewer --formats") from exc
    run = parse_perf_output(proc.stdout)
    if proc.returncode != 0 or not (run.timings or run.unsupported):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise GgmlBenchError(
            f"{path} perf exited with status {proc.returncode} and no usable timings; is it "
            f"test-backend-ops built by scripts/build-ggml-bench? Last output:\n{tail}"
        )
    return run
