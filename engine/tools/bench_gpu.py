"""`python -m engine.tools.bench_gpu`: speed of the GPU GGUF matrices (engine/gpu) next to torch bf16.

Per weight format, on DeepSeek-V3 shapes (rows x cols of y = x W^T):
  decode   one token: time and effective bandwidth (bytes the kernel reads: weights as held in
           VRAM, x and y) of GpuQuantMatrix.matmul, beside torch's bf16 matmul of the same shape;
  prefill  --tokens (512) tokens: TFLOP/s of GpuQuantMatrix.matmul (tl.dot on tiles dequantized in
           registers), of dequantize-to-bf16 + torch matmul, and of torch's bf16 matmul alone.
Each timing is the median of triton.testing.do_bench, which empties the L2 cache before every
call, so weights come from HBM as they do when a decode step walks through the layers.

--sweep instead times the GEMV (and prefill tl.dot) over a grid of tile shapes, to choose
engine.gpu.gguf_kernels' defaults. Compiling every kernel is done first, in parallel processes
(--jobs), so the run spends its time measuring.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGMLQuantizationType

from engine.gpu import gguf_kernels as kernels
from engine.gpu.gguf_kernels import DotTiles, GemvTiles
from engine.gpu.gguf_matrix import GpuQuantMatrix
from engine.tools.synth import random_tensor_bytes

Q = GGMLQuantizationType

FORMATS = ["Q4_K", "Q2_K", "Q3_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_XS", "IQ4_NL"]
FORMATS += ["F16", "BF16"]


@dataclass(frozen=True)
class Shape:
    name: str
    rows: int
    cols: int


# DeepSeek-V3 / R1 matrices that stay on the GPU: dense FFN down, q_b and q_a of MLA
SHAPES = [Shape("ffn_down", 7168, 18432), Shape("attn_q_b", 24576, 1536), Shape("attn_q_a", 1536, 7168)]

SWEEP_GEMV = [
    GemvTiles(8, 32, 4),
    GemvTiles(16, 32, 4),
    GemvTiles(16, 16, 4),
    GemvTiles(32, 16, 8),
    GemvTiles(16, 64, 8),
]
SWEEP_DOT = [
    DotTiles(64, 64, 256, 4, 2),
    DotTiles(128, 64, 256, 8, 2),
    DotTiles(128, 128, 128, 8, 3),
    DotTiles(64, 128, 128, 4, 3),
]


def random_matrix(fmt: str, shape: Shape, device: torch.device) -> GpuQuantMatrix:
    rng = np.random.default_rng(0)
    blocks = random_tensor_bytes(Q[fmt], (shape.rows, shape.cols), rng, std=0.02)
    return GpuQuantMatrix(
        np.ascontiguousarray(blocks).view(np.uint8), Q[fmt], (shape.rows, shape.cols), device
    )


def median_us(fn, timing: bool) -> float:
    """Median microseconds of fn() with the L2 cache emptied before each call (0 when not timing)."""
    if not timing:
        fn()
        return 0.0
    import triton.testing

    return 1000 * triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median")


def decode_row(fmt: str, shape: Shape, device: torch.device, timing: bool = True) -> str:
    m = random_matrix(fmt, shape, device)
    x = torch.randn(1, shape.cols, device=device).to(torch.bfloat16)
    us = median_us(lambda: m.matmul(x), timing)
    w = torch.randn(shape.rows, shape.cols, device=device).to(torch.bfloat16)
    bf16_us = median_us(lambda: torch.matmul(x, w.t()), timing)
    if not timing:
        return ""
    read = m.nbytes + 2 * (shape.cols + shape.rows)
    bf16_read = w.nbytes + 2 * (shape.cols + shape.rows)
    return (
        f"{fmt:7s} {shape.name:9s} {shape.rows:6d}x{shape.cols:<6d} {read / 2**20:8.1f} MiB {us:8.1f} us "
        f"{read / us / 1e3:7.0f} GB/s | bf16 {bf16_us:7.1f} us {bf16_read / bf16_us / 1e3:6.0f} GB/s | "
        f"x{bf16_us / us:4.2f} time, {read / us / (bf16_read / bf16_us):4.0%} of bf16 GB/s"
    )


def prefill_row(fmt: str, shape: Shape, tokens: int, device: torch.device, timing: bool = True) -> str:
    m = random_matrix(fmt, shape, device)
    x = torch.randn(tokens, shape.cols, device=device).to(torch.bfloat16)
    fused_us = median_us(lambda: m.matmul(x), timing)
    scratch_us = median_us(lambda: torch.matmul(x, m.dequantize(torch.bfloat16).t()), timing)
    w = torch.randn(shape.rows, shape.cols, device=device).to(torch.bfloat16)
    bf16_us = median_us(lambda: torch.matmul(x, w.t()), timing)
    if not timing:
        return ""
    flop = 2 * tokens * shape.rows * shape.cols
    return (
        f"{fmt:7s} {shape.name:9s} T={tokens:<4d} fused {flop / fused_us / 1e6:6.0f} TFLOP/s ({fused_us:7.1f} us) | "
        f"dequant+matmul {flop / scratch_us / 1e6:6.0f} ({scratch_us:7.1f} us) | bf16 {flop / bf16_us / 1e6:6.0f} "
        f"({bf16_us:7.1f} us)"
    )


def sweep_rows(fmt: str, shape: Shape, tokens: int, device: torch.device, timing: bool = True) -> list[str]:
    """Times of the GEMV per tile shape (with and without the automatic K split) and of the
    prefill tl.dot per tile shape."""
    m = random_matrix(fmt, shape, device)
    args = m.kernel_args()
    x = torch.randn(1, shape.cols, device=device).to(torch.bfloat16)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    lines = []
    for tiles in SWEEP_GEMV:
        auto = max(1, min(8, 2 * sms // triton_cdiv(shape.rows, tiles.block_n)))
        for split in sorted({1, auto}):
            us = median_us(
                lambda t=tiles, s=split: kernels.gemv(x, args, m.layout, m.rows, m.cols, t, s), timing
            )
            lines.append(f"gemv {fmt:6s} {shape.name:9s} {tiles} split={split}: {us:8.1f} us")
    xp = torch.randn(tokens, shape.cols, device=device).to(torch.bfloat16)
    flop = 2 * tokens * shape.rows * shape.cols
    for tiles in SWEEP_DOT:
        us = median_us(lambda t=tiles: kernels.dot(xp, args, m.layout, m.rows, m.cols, t, 1), timing)
        lines.append(
            f"dot  {fmt:6s} {shape.name:9s} T={tokens} {tiles}: {us:8.1f} us {flop / max(us, 1e-9) / 1e6:6.0f} TFLOP/s"
        )
    x16 = torch.randn(16, shape.cols, device=device).to(torch.bfloat16)
    for bn in (32, 64):
        tiles = DotTiles(bn, 16, 256, 4, 2)
        auto = max(1, min(8, 2 * sms // triton_cdiv(shape.rows, bn)))
        us = median_us(lambda t=tiles, s=auto: kernels.dot(x16, args, m.layout, m.rows, m.cols, t, s), timing)
        lines.append(f"dot  {fmt:6s} {shape.name:9s} T=16 {tiles} split={auto}: {us:8.1f} us")
    return lines


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _warm(job: tuple) -> None:
    """Compile the kernels of one job in a worker process (they land in Triton's on-disk cache)."""
    kind, fmt, shape, tokens = job
    device = torch.device("cuda")
    if kind == "decode":
        decode_row(fmt, shape, device, timing=False)
    elif kind == "prefill":
        prefill_row(fmt, shape, tokens, device, timing=False)
    else:
        sweep_rows(fmt, shape, tokens, device, timing=False)


def run(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print("bench_gpu needs a CUDA GPU")
        return 1
    device = torch.device("cuda")
    shapes = [s for s in SHAPES if s.name in args.shapes.split(",")]
    formats = args.formats.split(",")
    jobs = []
    if args.sweep:
        jobs += [("sweep", f, s, args.tokens) for f in formats for s in shapes]
    else:
        jobs += [("decode", f, s, 0) for f in formats for s in shapes]
        jobs += [("prefill", f, s, args.tokens) for f in formats for s in shapes[: args.prefill_shapes]]
    start = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            pool.map(_warm, jobs, chunksize=1)
    print(
        f"# {torch.cuda.get_device_name(device)}; kernels compiled in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    for kind, fmt, shape, tokens in jobs:
        if kind == "decode":
            print(decode_row(fmt, shape, device), flush=True)
        elif kind == "prefill":
            print(prefill_row(fmt, shape, tokens, device), flush=True)
        else:
            print("\n".join(sweep_rows(fmt, shape, tokens, device)), flush=True)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--formats", default=",".join(FORMATS), help="comma-separated GGUF types")
    p.add_argument("--shapes", default=",".join(s.name for s in SHAPES), help="comma-separated shape names")
    p.add_argument("--tokens", type=int, default=512, help="prefill tokens")
    p.add_argument("--prefill-shapes", type=int, default=1, help="prefill on the first N shapes")
    p.add_argument("--sweep", action="store_true", help="time tile shapes instead")
    p.add_argument("--jobs", type=int, default=12, help="processes compiling the kernels first")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.tools.bench_gpu", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
