"""`moebox bench kernels`: speed of the native CPU kernels on random GGUF blocks.

Prints, per weight format, the GEMV (one token) effective read bandwidth next to
a STREAM-like read of a buffer far larger than the last-level cache on the same
threads, then the fused MoE experts call for decode (T=1) and prefill (T=512)
on DeepSeek-V3 and Qwen3-30B-A3B expert shapes. On a CPU with AMX tiles (and
no --isa given) prefill also runs at the AVX-512 level, printed side by side
with the speed-up, plus a prefill GEMM at both levels.

With --ggml PATH it instead times the same formats and shapes in ggml (llama.cpp's
test-backend-ops, see engine/tools/bench_ggml.py) and in our kernels, timed the way ggml
times them, and prints the two side by side.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from engine.tools.bench_ggml import (
    GGML_FORMATS,
    GgmlCase,
    GgmlPerfRun,
    ggml_type_name,
    require_binary,
    run_perf,
)
from engine.tools.synth import random_tensor_bytes

DEFAULT_FORMATS = [
    "Q4_K",
    "Q2_K",
    "Q3_K",
    "Q5_K",
    "Q6_K",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "BF16",
    "F16",
    "IQ1_S",
    "IQ1_M",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ2_S",
    "IQ3_XXS",
    "IQ3_S",
    "IQ4_NL",
    "IQ4_XS",
]


@dataclass
class MoeShape:
    name: str
    hidden: int
    inter: int
    experts: int
    k: int


DEEPSEEK_V3 = MoeShape("DeepSeek-V3", 7168, 2048, 256, 8)
QWEN3_30B_A3B = MoeShape("Qwen3-30B-A3B", 2048, 768, 128, 8)


def random_matrix(fmt: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [rows, row_bytes] of random blocks with modest finite scales."""
    data = random_tensor_bytes(GGMLQuantizationType[fmt], (rows, cols), rng, std=0.02)
    return np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)


def _best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _elapsed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _at_levels(native, isas, fn):
    """fn(i) for each ISA level i of isas (None: the active one), restoring the active level."""
    active = native.isa()
    try:
        out = []
        for isa in isas:
            native.set_isa(isa or active)
            out.append(fn(isa))
        return out
    finally:
        native.set_isa(active)


def bench_gemv(native, fmt: str, cols: int, total_bytes: int, repeats: int, rng) -> tuple[float, float]:
    """(seconds per GEMV, GB/s): 4 matrices of total_bytes / 4, used in turn, so that
    none is still in the last-level cache when its turn comes (keep total_bytes >> L3)."""
    elems, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]
    rows = max(1, total_bytes // 4 // (cols // elems * nbytes))
    mats = [random_matrix(fmt, rows, cols, rng) for _ in range(4)]
    x = rng.standard_normal((1, cols)).astype(np.float32)
    t = int(GGMLQuantizationType[fmt])
    for w in mats:  # warm-up: page faults, pool start
        native.matmul(w, t, rows, cols, x)
    best = float("inf")
    for i in range(4 * repeats):
        t0 = time.perf_counter()
        native.matmul(mats[i % 4], t, rows, cols, x)
        best = min(best, time.perf_counter() - t0)
    return best, mats[0].nbytes / best / 1e9


def bench_gemv_in_cache(native, fmt: str, cols: int, threads: int, repeats: int, rng) -> float:
    """GB/s of a GEMV whose matrix (2 MiB per thread) stays in the caches (L2 and L3): the speed
    of block decoding alone, the ceiling of the out-of-cache figure whatever the memory. Large
    enough that a call takes ~0.1 ms, so the call and the thread hand-over are not measured."""
    elems, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]
    row_bytes = cols // elems * nbytes
    rows = max(threads, (2 << 20) * threads // row_bytes)
    w = random_matrix(fmt, rows, cols, rng)
    x = rng.standard_normal((1, cols)).astype(np.float32)
    out = np.empty((1, rows), np.float32)
    t = int(GGMLQuantizationType[fmt])

    def calls():
        for _ in range(10):
            native.matmul(w, t, rows, cols, x, out=out)

    return 10 * w.nbytes / _best_time(calls, repeats) / 1e9


def make_moe(native, shape: MoeShape, experts: int, fmt: str, rng):
    """(MoeExperts of random blocks, bytes per expert)."""
    t = int(GGMLQuantizationType[fmt])
    gate = random_matrix(fmt, experts * shape.inter, shape.hidden, rng)
    up = random_matrix(fmt, experts * shape.inter, shape.hidden, rng)
    down = random_matrix(fmt, experts * shape.hidden, shape.inter, rng)
    moe = native.MoeExperts(gate, t, up, t, down, t, experts, shape.hidden, shape.inter)
    return moe, (gate.nbytes + up.nbytes + down.nbytes) // experts


def bench_moe(
    native, moe, per_expert: int, shape: MoeShape, experts: int, tokens: int, repeats: int, rng, isas=(None,)
) -> list[tuple[float, float]]:
    """Per ISA level of `isas` (None: the active one): (seconds per call, GB/s of distinct expert
    weights read) with random routing over `experts`. The levels take turns on each routing, so
    a slow phase of the machine hits them alike and their ratio holds better than from runs
    one after the other."""
    x = rng.standard_normal((tokens, shape.hidden)).astype(np.float32)
    k = shape.k
    routings = []
    for _ in range(repeats + 1):
        ids = np.stack([rng.choice(experts, size=k, replace=False) for _ in range(tokens)]).astype(np.int32)
        routings.append((ids, rng.uniform(0.05, 1.0, size=(tokens, k)).astype(np.float32)))
    _at_levels(native, isas, lambda _: moe.forward(x, *routings[0]))  # warm-up (pool start, page faults)
    best = [(float("inf"), 0)] * len(isas)
    for ids, weights in routings[1:]:  # fresh routing each time: no expert stays in cache
        times = _at_levels(native, isas, lambda _, r=(ids, weights): _elapsed(lambda: moe.forward(x, *r)))
        for j, s in enumerate(times):
            if s < best[j][0]:
                best[j] = (s, len(np.unique(ids)) * per_expert)
    return [(s, b / s / 1e9) for s, b in best]


def bench_gemm(
    native, fmt: str, rows: int, cols: int, tokens: int, repeats: int, rng, isas=(None,)
) -> list[float]:
    """Seconds per prefill matmul [tokens, cols] x [rows, cols]^T per ISA level of `isas`,
    the levels taking turns (as in bench_moe)."""
    w = random_matrix(fmt, rows, cols, rng)
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    t = int(GGMLQuantizationType[fmt])

    def timed(_):
        return _elapsed(lambda: native.matmul(w, t, rows, cols, x))

    _at_levels(native, isas, timed)  # warm-up
    best = [float("inf")] * len(isas)
    for _ in range(repeats):
        best = [min(b, s) for b, s in zip(best, _at_levels(native, isas, timed), strict=True)]
    return best


def run(args: argparse.Namespace) -> int:
    from engine.native import native_kernels

    native = native_kernels()  # a clear error where the kernels are not built or cannot run here
    if args.threads:
        native.set_num_threads(args.threads)
    if args.isa:
        native.set_isa(args.isa)
    rng = np.random.default_rng(0)
    threads = native.num_threads()
    print(f"CPU: {native.cpu_features()['brand']}  ISA: {native.isa()}  threads: {threads}")
    if args.ggml:
        return run_ggml_comparison(native, args, threads, rng)
    if args.formats is None:
        args.formats = DEFAULT_FORMATS

    buf = rng.integers(0, 256, size=args.read_mib << 20, dtype=np.uint8)
    read_gbs = native.read_bandwidth(buf, 5)
    del buf
    print(f"memory read bandwidth ({args.read_mib} MiB buffer, {threads} threads): {read_gbs:.1f} GB/s\n")

    print(f"GEMV, one token, {args.cols} columns, 4 matrices of ~{args.gemv_mib // 4} MiB used in turn")
    print(f"{'format':<8}{'ms':>9}{'GB/s':>9}{'% of read':>11}{'in-cache GB/s':>15}{'% of read':>11}")
    for fmt in args.formats:
        s, gbs = bench_gemv(native, fmt, args.cols, args.gemv_mib << 20, args.repeats, rng)
        cached = bench_gemv_in_cache(native, fmt, args.cols, threads, args.repeats, rng)
        print(
            f"{fmt:<8}{s * 1e3:>9.2f}{gbs:>9.2f}{100 * gbs / read_gbs:>10.0f}%"
            f"{cached:>15.2f}{100 * cached / read_gbs:>10.0f}%"
        )
    print(
        "(in-cache: the same GEMV on a matrix of 2 MiB per thread that stays in L2/L3, i.e. the block\n"
        " decoding speed; where it is below the read bandwidth the kernel, not memory, sets the limit)\n"
    )

    # With AMX tiles, prefill runs at both levels: AVX-512 next to AMX.
    compare = args.isa is None and native.isa() == "amx"
    for fmt in args.moe_format:
        bench_prefill(native, fmt, args, compare, rng)
    print(
        "(GB/s at T=1: bytes of the distinct experts read / time; Qwen3's 128 experts are ~0.3 GiB at Q4_K,"
    )
    print(" so part of them can sit in a large L3)")
    if args.ds_experts < DEEPSEEK_V3.experts:
        print(
            f"(DeepSeek-V3 with {args.ds_experts} of its 256 experts in RAM: the same bytes per token;"
            " at T=512 each expert gets more tokens than with 256)"
        )
    return 0


def bench_prefill(native, fmt: str, args: argparse.Namespace, compare: bool, rng) -> None:
    """MoE experts with gate/up/down in `fmt` on both shapes, then (AMX CPUs) the prefill GEMM."""
    shapes = [(DEEPSEEK_V3, args.ds_experts), (QWEN3_30B_A3B, args.qwen_experts)]
    print(f"\nMoE experts ({fmt} gate/up/down), top-{DEEPSEEK_V3.k}, random routing")
    header = (
        f"{'shape':<15}{'hidden x inter':>16}{'experts':>9}{'tokens':>8}{'ms':>10}{'tok/s':>9}{'GB/s':>8}"
    )
    print(header + (f"{'AVX-512 ms':>12}{'AMX speed-up':>14}" if compare else ""))
    for shape, experts in shapes:
        experts = min(experts, shape.experts)
        moe, per_expert = make_moe(native, shape, experts, fmt, rng)
        for tokens in args.moe_tokens:
            reps = args.repeats if tokens == 1 else max(1, args.repeats // 2)
            both = compare and tokens > 1
            timings = bench_moe(
                native,
                moe,
                per_expert,
                shape,
                experts,
                tokens,
                reps,
                rng,
                ("amx", "avx512") if both else (None,),
            )
            s, gbs = timings[0]
            line = (
                f"{shape.name:<15}{f'{shape.hidden} x {shape.inter}':>16}{experts:>9}{tokens:>8}"
                f"{s * 1e3:>10.1f}{tokens / s:>9.1f}{gbs if tokens == 1 else float('nan'):>8.1f}"
            )
            if both:
                s512 = timings[1][0]
                line += f"{s512 * 1e3:>12.1f}{s512 / s:>13.2f}x"
            print(line, flush=True)
        del moe
    if compare:
        print(f"\nprefill GEMM ({fmt})")
        print(f"{'rows x cols':>14}{'tokens':>8}{'AMX ms':>9}{'AVX-512 ms':>12}{'AMX speed-up':>14}")
        for rows, cols in ((2048, 7168), (7168, 2048), (768, 2048)):
            for tokens in args.gemm_tokens:
                s, s512 = bench_gemm(native, fmt, rows, cols, tokens, args.repeats, rng, ("amx", "avx512"))
                print(
                    f"{f'{rows} x {cols}':>14}{tokens:>8}{s * 1e3:>9.2f}{s512 * 1e3:>12.2f}{s512 / s:>13.2f}x",
                    flush=True,
                )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=0, help="kernel threads (default: physical cores)")
    p.add_argument("--isa", default=None, help="force scalar|avx2|avx512|amx (default: MOEBOX_ISA or best)")
    p.add_argument(
        "--formats",
        nargs="+",
        default=None,
        help=f"weight formats (default: the GEMV table {len(DEFAULT_FORMATS)} formats; with --ggml: "
        + " ".join(GGML_FORMATS)
        + ")",
    )
    p.add_argument("--cols", type=int, default=7168, help="GEMV columns (default: DeepSeek-V3 hidden size)")
    p.add_argument(
        "--gemv-mib",
        type=int,
        default=1024,
        help="weight bytes of the 4 GEMV matrices together, far above L3",
    )
    p.add_argument("--read-mib", type=int, default=1024, help="buffer for the read-bandwidth measurement")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (best is reported)")
    p.add_argument(
        "--moe-format",
        nargs="+",
        default=["Q4_K"],
        help="formats of the expert tensors (one MoE table and prefill GEMM table each)",
    )
    p.add_argument(
        "--gemm-tokens",
        type=int,
        nargs="+",
        default=[512],
        help="token counts of the prefill GEMM (AMX CPUs)",
    )
    p.add_argument(
        "--moe-tokens", type=int, nargs="+", default=[1, 512], help="token counts for the MoE call"
    )
    p.add_argument(
        "--ds-experts",
        type=int,
        default=32,
        help="DeepSeek-V3 experts held in RAM (256 = all, about 6.3 GiB at Q4_K)",
    )
    p.add_argument("--qwen-experts", type=int, default=128, help="Qwen3-30B-A3B experts held in RAM")
    p.add_argument(
        "--ggml",
        metavar="TEST_BACKEND_OPS",
        default=None,
        help="compare with ggml: path of test-backend-ops built by scripts/build-ggml-bench",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="with --ggml: least time each of our timings runs (ggml runs each case >= 1 s)",
    )


# --- beside ggml ----------------------------------------------------------------------------

GEMV_SHAPES = [(2048, 7168), (7168, 2048)]  # (rows, cols): DeepSeek-V3 gate/up and down of one expert


def _runs_per_draw(flops: int) -> int:
    """Times test-backend-ops repeats one op inside a graph on the CPU (8 GFLOP per graph,
    at most 8191 nodes): the weights stay cache-warm, and expert ids change only between graphs."""
    return min(8191, 8_000_000_000 // flops) + 1


def _mean_seconds(call, runs: int, seconds: float, before=None) -> float:
    """Mean seconds per call over batches of `runs` calls until `seconds` have passed
    (`before` runs untimed ahead of each batch)."""
    total, calls = 0.0, 0
    while total < seconds:
        if before is not None:
            before()
        t0 = time.perf_counter()
        for _ in range(runs):
            call()
        total += time.perf_counter() - t0
        calls += runs
    return total / calls


def time_gemv_like_ggml(native, fmt: str, rows: int, cols: int, seconds: float, rng) -> float:
    """Mean seconds of one GEMV on one matrix, called back to back like test-backend-ops."""
    w = random_matrix(fmt, rows, cols, rng)
    x = rng.uniform(-1, 1, size=(1, cols)).astype(np.float32)
    t = int(GGMLQuantizationType[fmt])
    native.matmul(w, t, rows, cols, x)  # warm-up
    return _mean_seconds(lambda: native.matmul(w, t, rows, cols, x), _runs_per_draw(2 * rows * cols), seconds)


def time_moe_like_ggml(native, moe, shape: MoeShape, experts: int, tokens: int, seconds: float, rng) -> float:
    """Mean seconds of one fused expert FFN call; routing is drawn again as often as ggml
    draws its expert ids (once per graph of repeated runs)."""
    x = rng.uniform(-1, 1, size=(tokens, shape.hidden)).astype(np.float32)
    routing = {}

    def draw():
        ids = np.argsort(rng.random((tokens, experts)), axis=1)[:, : shape.k].astype(np.int32)
        routing["ids"], routing["w"] = ids, rng.uniform(0.05, 1.0, size=(tokens, shape.k)).astype(np.float32)

    draw()
    moe.forward(x, routing["ids"], routing["w"])  # warm-up
    runs = _runs_per_draw(2 * shape.inter * shape.hidden * tokens * shape.k)
    return _mean_seconds(lambda: moe.forward(x, routing["ids"], routing["w"]), runs, seconds, before=draw)


def _moe_cases(fmt: str, shape: MoeShape, experts: int, tokens: int) -> tuple[GgmlCase, GgmlCase]:
    """ggml's gate (= up) and down MUL_MAT_ID cases of one expert FFN call."""
    tn = ggml_type_name(fmt)
    gate = GgmlCase("MUL_MAT_ID", tn, shape.inter, tokens, shape.hidden, experts, shape.k, True)
    down = GgmlCase("MUL_MAT_ID", tn, shape.hidden, tokens, shape.inter, experts, shape.k, False)
    return gate, down


def run_ggml_comparison(native, args: argparse.Namespace, threads: int, rng) -> int:
    """One test-backend-ops run per format (rows appear as they are measured), then ours."""
    require_binary(args.ggml)
    formats = args.formats or GGML_FORMATS
    moe_shapes = [
        (DEEPSEEK_V3, min(args.ds_experts, DEEPSEEK_V3.experts)),
        (QWEN3_30B_A3B, args.qwen_experts),
    ]
    print(
        f"ggml: {args.ggml} perf, CPU backend. Both sides: the same weights computed back to back"
        " (cache-warm, as test-backend-ops times them),\nmean time per call; MoE = one expert FFN call"
        " (ours: fused gate/up/down; ggml: MUL_MAT_ID gate + up + down);\nratio = ggml / ours"
        " (above 1: ours faster)\n",
        flush=True,
    )
    print(f"{'format':<9}{'op':<33}{'T':>4}{'ours us':>11}{'ggml us':>11}{'ratio':>8}")

    def row(fmt: str, what: str, tokens: int, ours_s: float, ggml_us: float | None) -> None:
        ours_us = ours_s * 1e6
        ggml_text = f"{_us(ggml_us)}{ggml_us / ours_us:>8.2f}" if ggml_us else f"{'-':>11}{'-':>8}"
        print(f"{fmt:<9}{what:<33}{tokens:>4}{_us(ours_us)}{ggml_text}", flush=True)

    ggml_threads = set()
    for fmt in formats:
        tn = ggml_type_name(fmt)
        cases = [GgmlCase("MUL_MAT", tn, rows, 1, cols) for rows, cols in GEMV_SHAPES]
        for shape, experts in moe_shapes:
            for tokens in args.moe_tokens:
                cases += _moe_cases(fmt, shape, experts, tokens)
        ggml = run_perf(args.ggml, cases, threads)
        ggml_threads.add(ggml.threads)
        for rows, cols in GEMV_SHAPES:
            s = time_gemv_like_ggml(native, fmt, rows, cols, args.seconds, rng)
            row(fmt, f"GEMV {rows} x {cols}", 1, s, ggml.us(GgmlCase("MUL_MAT", tn, rows, 1, cols)))
        for shape, experts in moe_shapes:
            moe = _moe_experts(native, fmt, shape, experts, rng)
            for tokens in args.moe_tokens:
                s = time_moe_like_ggml(native, moe, shape, experts, tokens, args.seconds, rng)
                name = f"MoE {shape.name} ({experts} experts)"
                row(fmt, name, tokens, s, _ggml_moe_us(ggml, fmt, shape, experts, tokens))
            del moe
    print(
        f"\nggml CPU backend on {ggml.device}: {' / '.join(str(t) for t in ggml_threads)} threads; ours: {threads}"
    )
    if None in ggml_threads:
        print(
            "(this test-backend-ops does not say its thread count: not built by scripts/build-ggml-bench;"
            f" upstream uses hardware threads / 2 = {max(1, (os.cpu_count() or 2) // 2)})"
        )
    print("('-': this test-backend-ops has no perf case for the shape; scripts/build-ggml-bench adds them)")
    return 0


def _us(us: float) -> str:
    return f"{us:>11.1f}" if us < 1e5 else f"{us:>11.0f}"


def _moe_experts(native, fmt: str, shape: MoeShape, experts: int, rng):
    """Fused expert weights: random blocks of up to 8 experts, repeated over all of them
    (drawing GBs of random bytes would take longer than the timing; the bytes read are the same)."""
    t = int(GGMLQuantizationType[fmt])
    drawn = min(experts, 8)
    reps = -(-experts // drawn)

    def stacked(rows: int, cols: int) -> np.ndarray:
        base = random_matrix(fmt, drawn * rows, cols, rng)
        return np.ascontiguousarray(np.tile(base, (reps, 1))[: experts * rows])

    gate, up = stacked(shape.inter, shape.hidden), stacked(shape.inter, shape.hidden)
    down = stacked(shape.hidden, shape.inter)
    return native.MoeExperts(gate, t, up, t, down, t, experts, shape.hidden, shape.inter)


def _ggml_moe_us(ggml: GgmlPerfRun, fmt: str, shape: MoeShape, experts: int, tokens: int) -> float | None:
    gate, down = (ggml.us(c) for c in _moe_cases(fmt, shape, experts, tokens))
    return None if gate is None or down is None else 2 * gate + down
