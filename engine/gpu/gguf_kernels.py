"""Triton kernels that multiply GGUF-quantized matrices kept in VRAM (planes of engine/gpu/gguf_layout.py).

Three kernels share one loader and one dequantizer:
  gemv      one token: each program dequantizes [BLOCK_N rows, NU units] tiles in registers and
            accumulates weight * activation in f32 (CUDA cores, no tensor cores).
  dot       several tokens (decode T = 2..16 and prefill): the same tiles, rounded to bf16, go
            through tl.dot (tensor cores, f32 accumulation) against the activations.
  dequant   writes the values out ([rows, cols], any float dtype): GpuQuantMatrix.dequantize.

A tile is BLOCK_N rows x NU units of 4 int32 words; its plane p holds the values 4p + w of each
unit, so each plane is one shift and mask of the words and meets 4 consecutive activations. The
format enters as constexprs (format_constants), read off the BlockLayout: the kernels are compiled
once per format and tile shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from engine.gpu.gguf_layout import IQ4_LEVELS, BlockLayout, PackedPlanes

# Triton's CPU interpreter (TRITON_INTERPRET=1, decided when this module is imported) runs tl.dot
# on bf16 operands as if their bits were integers, and rounds f32 -> bf16 towards zero (Triton 3.9).
# Under it the kernels round to bf16 by integer arithmetic and keep the values in f32 (the dot then
# multiplies the same values exactly), and bf16 results are written as f32 and rounded by torch.
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def format_constants(layout: BlockLayout) -> dict[str, int]:
    """The constexprs that describe one format to the kernels."""
    return dict(
        SUB=layout.sub,
        UNIT=layout.unit,
        LO_BITS=layout.lo_bits,
        HI_BITS=layout.hi_bits,
        ZERO=layout.zero,
        LEVELS=int(layout.levels),
        SCALES=int(layout.scales),
        SUBS_PER_BLOCK=layout.subs_per_block,
        SC_BITS=layout.sc_bits,
    )


# ---- shared device functions --------------------------------------------------------------------


@triton.jit
def _load_units(lo_ptr, hi_ptr, row, unit, w, ok, n_units, HI_BITS: tl.constexpr):
    """Low-bit words and high-bit words (as int32) of rows `row`, units `unit` and words `w` (0..3),
    broadcast together: the tile's shape."""
    offs = row * (n_units * 4) + unit * 4 + w
    lo = tl.load(lo_ptr + offs, mask=ok, other=0)
    hi = lo
    if HI_BITS > 0:
        hi = tl.load(hi_ptr + offs, mask=ok, other=0).to(tl.int32)
    return lo, hi


@triton.jit
def _load_scales(
    sc_ptr,
    d_ptr,
    m_ptr,
    row,
    sub,  # sub-block index in the row, broadcast with row
    ok,
    n_subs,
    SCALES: tl.constexpr,
    SUBS_PER_BLOCK: tl.constexpr,
    SC_BITS: tl.constexpr,
):
    """Per sub-block scale dl and offset ml, f32 of the shape of row and sub: value = level * dl - ml."""
    ml = (row * 0 + sub * 0).to(tl.float32)
    dl = ml + 1.0
    if SCALES != 0:
        n_blocks = n_subs // SUBS_PER_BLOCK
        block = row * n_blocks + sub // SUBS_PER_BLOCK
        d = tl.load(d_ptr + block, mask=ok, other=0.0).to(tl.float32)
        if SCALES == 1:  # d * q
            dl = d
        elif SCALES == 2:  # d * q + m
            dl = d
            ml = -tl.load(m_ptr + block, mask=ok, other=0.0).to(tl.float32)
        elif SCALES == 3:  # (d * sc) * q, sc a signed byte
            dl = d * tl.load(sc_ptr + row * n_subs + sub, mask=ok, other=0).to(tl.float32)
        else:  # (d * sc) * q - dmin * mn, sc and mn packed in one byte or int16
            packed = tl.load(sc_ptr + row * n_subs + sub, mask=ok, other=0).to(tl.int32)
            dl = d * (packed & ((1 << SC_BITS) - 1)).to(tl.float32)
            dmin = tl.load(m_ptr + block, mask=ok, other=0.0).to(tl.float32)
            ml = dmin * (packed >> SC_BITS).to(tl.float32)
    return dl, ml


@triton.jit
def _plane_levels(
    lo, hi, levels_ptr, p: tl.constexpr, LO_BITS: tl.constexpr, HI_BITS: tl.constexpr, ZERO: tl.constexpr,
    LEVELS: tl.constexpr,
):  # fmt: skip
    """f32 levels (values before scaling) of plane p: values 4p + w of each unit."""
    q = (lo >> (LO_BITS * p)) & ((1 << LO_BITS) - 1)
    if HI_BITS > 0:  # Q5_x, Q5_K, Q6_K, Q3_K
        q = q | (((hi >> (HI_BITS * p)) & ((1 << HI_BITS) - 1)) << LO_BITS)
    if LEVELS == 0:
        # Integer levels: or-ing q into the mantissa of 2**23 makes it a float without a conversion
        # instruction (those issue at a fraction of the integer rate); exact for q < 2**23.
        level = (q | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + ZERO)
    elif LEVELS == 1:  # IQ4_NL, IQ4_XS: 16 non-linear levels
        level = tl.load(levels_ptr + q)
    else:  # F16
        level = q.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return level


@triton.jit
def _plane_dot_in_place(
    lo, lo_top, hi, x, p: tl.constexpr, LO_BITS: tl.constexpr, HI_BITS: tl.constexpr, ZERO: tl.constexpr
):
    """level * x for plane p of integer levels, the level's bits masked where they lie rather than
    shifted down: fewer instructions per value than _plane_levels (the GEMV is bound by them).
    With the plane starting at bit `start` (of lo, or of lo_top = lo >> 16 for planes that would
    reach past bit 22 of the float's mantissa) the masked bits make level * 2**start, and
    x * 2**-start makes up for it; both products are exact."""
    start: tl.constexpr = LO_BITS * p if LO_BITS * (p + 1) + HI_BITS <= 23 else LO_BITS * p - 16
    src = lo if start == LO_BITS * p else lo_top
    field = src & (((1 << LO_BITS) - 1) << start)
    if HI_BITS > 0:  # move the high bits from bit HI_BITS * p of hi to just above the low ones
        up: tl.constexpr = start + LO_BITS - HI_BITS * p
        h = hi << up if up >= 0 else hi >> -up
        field = field | (h & (((1 << HI_BITS) - 1) << (start + LO_BITS)))
    level = (field | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + ZERO * (1 << start))
    return level * (x * (1.0 / (1 << start)))


@triton.jit
def _scale(level, dl, ml, SCALES: tl.constexpr):
    """level * dl - ml in gguf's order of operations: the values of gguf.quants.dequantize, bit for bit."""
    if SCALES == 0:
        v = level
    elif SCALES == 1 or SCALES == 3:
        v = level * dl
    else:  # level * dl is exact here, so a fused multiply-add rounds like gguf's multiply then add
        v = level * dl - ml
    return v


@triton.jit
def _bf16(v, WIDEN: tl.constexpr):
    """v rounded to bf16 (to nearest, ties to even); with WIDEN (the interpreter) kept in f32."""
    if WIDEN:
        bits = v.to(tl.float32).to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
        return bits.to(tl.float32, bitcast=True)
    return v.to(tl.bfloat16)


# ---- kernels --------------------------------------------------------------------------------------


@triton.jit
def _gemv_kernel(
    out_ptr,  # [T, rows] (x's dtype), or f32 [SPLIT_K, T, rows] partial sums
    x_ptr,  # [T, cols]
    lo_ptr,
    hi_ptr,
    sc_ptr,
    d_ptr,
    m_ptr,
    levels_ptr,
    rows,
    n_units,
    n_subs,
    x_stride,
    out_stride,
    split_stride,
    units_per_split,
    SUB: tl.constexpr,
    UNIT: tl.constexpr,
    LO_BITS: tl.constexpr,
    HI_BITS: tl.constexpr,
    ZERO: tl.constexpr,
    LEVELS: tl.constexpr,
    SCALES: tl.constexpr,
    SUBS_PER_BLOCK: tl.constexpr,
    SC_BITS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NU: tl.constexpr,
    EVEN_K: tl.constexpr,  # the split's units are whole tiles: no mask along K
):
    pid_n = tl.program_id(0)
    t = tl.program_id(1)
    pid_k = tl.program_id(2)
    # The tile is [BLOCK_N * NU, 4] (row-major over rows and units) rather than [BLOCK_N, NU, 4]:
    # with one axis of 4 contiguous words and one of stride 4, every Triton version lays it out
    # the same way, with the rows of a unit in one thread (so it reads that unit's activations
    # once for all of them); two non-contiguous axes would leave that choice to tie-breaking.
    i = tl.arange(0, BLOCK_N * NU)[:, None]
    row = pid_n * BLOCK_N + i // NU
    unit_in_tile = i % NU
    w = tl.arange(0, 4)[None, :]
    first = pid_k * units_per_split
    last = tl.minimum(first + units_per_split, n_units)
    x_row = x_ptr + t * x_stride
    acc = tl.zeros([BLOCK_N * NU, 4], tl.float32)
    for u0 in range(first, last, NU):
        unit = u0 + unit_in_tile
        in_k = unit < last
        ok = row < rows if EVEN_K else (row < rows) & in_k
        lo, hi = _load_units(lo_ptr, hi_ptr, row, unit, w, ok, n_units, HI_BITS)
        lo_top = lo >> 16
        for p in tl.static_range(32 // LO_BITS):
            if (4 * p) % SUB == 0:  # the first plane of a sub-block
                sub = (unit * UNIT + 4 * p) // SUB
                dl, ml = _load_scales(
                    sc_ptr, d_ptr, m_ptr, row, sub, ok, n_subs, SCALES, SUBS_PER_BLOCK, SC_BITS
                )
                # sum_e x_e (level_e * dl - ml) = dl * sum_e x_e level_e - ml * sum_e x_e:
                # the sub-block's scales are applied once per word, not once per value
                x_level = tl.zeros([BLOCK_N * NU, 4], tl.float32)
                x_sum = tl.zeros([BLOCK_N * NU, 4], tl.float32)
            # the tile's shape though all rows read the same activations: a load of the tile's shape
            # gets the tile's register layout, where a [NU, 4] one would make Triton move every
            # plane through shared memory to meet it
            x_ptrs = x_row + (row * 0 + unit * UNIT + 4 * p + w)
            if EVEN_K:
                xp = tl.load(x_ptrs).to(tl.float32)
            else:
                xp = tl.load(x_ptrs, mask=in_k, other=0.0).to(tl.float32)
            if LEVELS == 0:
                x_level += _plane_dot_in_place(lo, lo_top, hi, xp, p, LO_BITS, HI_BITS, ZERO)
            else:
                x_level += _plane_levels(lo, hi, levels_ptr, p, LO_BITS, HI_BITS, ZERO, LEVELS) * xp
            if SCALES == 2 or SCALES == 4:
                x_sum += xp
            if p == 32 // LO_BITS - 1 or (4 * (p + 1)) % SUB == 0:  # the last plane of a sub-block
                if SCALES == 0:
                    acc += x_level
                elif SCALES == 2 or SCALES == 4:
                    acc += x_level * dl - x_sum * ml
                else:
                    acc += x_level * dl
    y = tl.sum(tl.reshape(tl.sum(acc, axis=1), [BLOCK_N, NU]), axis=1)  # [BLOCK_N]
    rows_out = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dst = out_ptr + pid_k * split_stride + t * out_stride + rows_out
    tl.store(dst, y.to(out_ptr.dtype.element_ty), mask=rows_out < rows)


@triton.jit
def _dot_kernel(
    out_ptr,  # [T, rows] (x's dtype), or f32 [SPLIT_K, T, rows] partial sums
    x_ptr,  # [T, cols]
    lo_ptr,
    hi_ptr,
    sc_ptr,
    d_ptr,
    m_ptr,
    levels_ptr,
    rows,
    n_units,
    n_subs,
    T,
    x_stride,
    out_stride,
    split_stride,
    units_per_split,
    SUB: tl.constexpr,
    UNIT: tl.constexpr,
    LO_BITS: tl.constexpr,
    HI_BITS: tl.constexpr,
    ZERO: tl.constexpr,
    LEVELS: tl.constexpr,
    SCALES: tl.constexpr,
    SUBS_PER_BLOCK: tl.constexpr,
    SC_BITS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr,
    NU: tl.constexpr,
    EVEN_K: tl.constexpr,
    WIDEN: tl.constexpr,
):
    # the programs of one row block, over all token blocks, run side by side: the weights come
    # from DRAM once and are re-read from L2
    pid = tl.program_id(0)
    n_tok_blocks = tl.cdiv(T, BLOCK_T)
    pid_n = pid // n_tok_blocks
    pid_t = pid % n_tok_blocks
    pid_k = tl.program_id(1)
    row = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[:, None, None]
    unit_in_tile = tl.arange(0, NU)[None, :, None]
    tok = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    k = tl.arange(0, NU * 4)  # the K axis of one plane's product: unit k // 4, word k % 4
    first = pid_k * units_per_split
    last = tl.minimum(first + units_per_split, n_units)
    acc = tl.zeros([BLOCK_N, BLOCK_T], tl.float32)
    for u0 in range(first, last, NU):
        unit = u0 + unit_in_tile
        ok = row < rows if EVEN_K else (row < rows) & (unit < last)
        lo, hi = _load_units(lo_ptr, hi_ptr, row, unit, tl.arange(0, 4)[None, None, :], ok, n_units, HI_BITS)
        x_ok = (tok < T)[None, :]
        if not EVEN_K:
            x_ok = x_ok & ((u0 + k // 4) < last)[:, None]
        for p in tl.static_range(32 // LO_BITS):
            if (4 * p) % SUB == 0:
                sub = (unit * UNIT + 4 * p) // SUB
                dl, ml = _load_scales(
                    sc_ptr, d_ptr, m_ptr, row, sub, ok, n_subs, SCALES, SUBS_PER_BLOCK, SC_BITS
                )
            v = _scale(_plane_levels(lo, hi, levels_ptr, p, LO_BITS, HI_BITS, ZERO, LEVELS), dl, ml, SCALES)
            a = tl.reshape(_bf16(v, WIDEN), [BLOCK_N, NU * 4])
            col = (u0 + k // 4) * UNIT + 4 * p + k % 4  # [NU * 4]
            xt = tl.load(
                x_ptr + tok[None, :] * x_stride + col[:, None], mask=x_ok, other=0.0
            )  # [NU * 4, BLOCK_T]
            acc = tl.dot(a, _bf16(xt, WIDEN), acc)
    rows_out = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dst = out_ptr + pid_k * split_stride + tok[None, :] * out_stride + rows_out[:, None]
    tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=(rows_out < rows)[:, None] & (tok < T)[None, :])


@triton.jit
def _dequant_kernel(
    out_ptr,  # [rows, cols]
    lo_ptr,
    hi_ptr,
    sc_ptr,
    d_ptr,
    m_ptr,
    levels_ptr,
    rows,
    n_units,
    n_subs,
    out_stride,
    SUB: tl.constexpr,
    UNIT: tl.constexpr,
    LO_BITS: tl.constexpr,
    HI_BITS: tl.constexpr,
    ZERO: tl.constexpr,
    LEVELS: tl.constexpr,
    SCALES: tl.constexpr,
    SUBS_PER_BLOCK: tl.constexpr,
    SC_BITS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NU: tl.constexpr,
):
    row = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None, None]
    unit = tl.program_id(1) * NU + tl.arange(0, NU)[None, :, None]
    w = tl.arange(0, 4)[None, None, :]
    ok = (row < rows) & (unit < n_units)
    lo, hi = _load_units(lo_ptr, hi_ptr, row, unit, w, ok, n_units, HI_BITS)
    for p in tl.static_range(32 // LO_BITS):
        if (4 * p) % SUB == 0:
            sub = (unit * UNIT + 4 * p) // SUB
            dl, ml = _load_scales(sc_ptr, d_ptr, m_ptr, row, sub, ok, n_subs, SCALES, SUBS_PER_BLOCK, SC_BITS)
        v = _scale(_plane_levels(lo, hi, levels_ptr, p, LO_BITS, HI_BITS, ZERO, LEVELS), dl, ml, SCALES)
        tl.store(
            out_ptr + row * out_stride + unit * UNIT + 4 * p + w, v.to(out_ptr.dtype.element_ty), mask=ok
        )


# ---- launches -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GemvTiles:
    block_n: int = 16
    units: int = 32  # NU: 16-byte units of quant words per row per loop step
    num_warps: int = 4


@dataclass(frozen=True)
class DotTiles:
    block_n: int = 64
    block_t: int = 64
    values: int = (
        256  # weight values per row per loop step (NU = values / unit, one plane's dot has K = 4 NU)
    )
    num_warps: int = 4
    num_stages: int = 2


def gemv_plan(rows: int, multiprocessors: int) -> tuple[GemvTiles, int]:
    """Tiles and K splits for one token: split K when the row blocks alone would leave
    multiprocessors idle (the partial sums cost one small reduction)."""
    tiles = GemvTiles()
    programs = triton.cdiv(rows, tiles.block_n)
    return tiles, max(1, min(8, 2 * multiprocessors // programs))


def dot_plan(rows: int, T: int, multiprocessors: int) -> tuple[DotTiles, int]:
    """Tiles and K splits for T >= 2 tokens: 16-token tiles up to T = 16 (decode), 64 above."""
    tiles = DotTiles(block_t=16) if T <= 16 else DotTiles()
    programs = triton.cdiv(rows, tiles.block_n) * triton.cdiv(T, tiles.block_t)
    return tiles, max(1, min(8, 2 * multiprocessors // programs))


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _k_tiling(n_units: int, want: int, split_k: int, least: int = 1) -> tuple[int, bool, int, int]:
    """(NU, EVEN_K, units per split, splits): NU a power of two near `want`, at least `least`, that
    divides the row where one does (then no load is masked along K); splits are whole tiles."""
    nu = max(least, min(_pow2_floor(want), triton.next_power_of_2(n_units)))
    even = False
    for smaller in (nu, nu // 2, nu // 4):
        if smaller >= least and n_units % smaller == 0:
            nu, even = smaller, True
            break
    per_split = triton.cdiv(triton.cdiv(n_units, split_k), nu) * nu
    return nu, even, per_split, triton.cdiv(n_units, per_split)


class PlaneArgs:
    """The tensors one launch reads: the planes of one matrix (a slice of an expert stack) and the levels."""

    def __init__(self, planes: PackedPlanes, levels: torch.Tensor):
        lo = planes.lo
        self.tensors = [t if t is not None else lo for t in planes.fields()] + [levels]


def levels_table(device: torch.device) -> torch.Tensor:
    return torch.tensor(IQ4_LEVELS, dtype=torch.float32, device=device)


def _kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a kernel writes for a result in `dtype` (see INTERPRETING)."""
    return torch.float32 if INTERPRETING and dtype == torch.bfloat16 else dtype


def _result_buffers(x: torch.Tensor, rows: int, split_k: int) -> tuple[torch.Tensor, int]:
    """The kernel's output ([T, rows], or f32 [split_k, T, rows] partial sums) and its split stride."""
    T = x.shape[0]
    if split_k == 1:
        return torch.empty((T, rows), dtype=_kernel_dtype(x.dtype), device=x.device), 0
    return torch.empty((split_k, T, rows), dtype=torch.float32, device=x.device), T * rows


def _result(dst: torch.Tensor, split_k: int, dtype: torch.dtype) -> torch.Tensor:
    return (dst.sum(0) if split_k > 1 else dst).to(dtype)


def gemv(
    x: torch.Tensor,
    args: PlaneArgs,
    layout: BlockLayout,
    rows: int,
    cols: int,
    tiles: GemvTiles,
    split_k: int = 1,
) -> torch.Tensor:
    """x [T, cols] (bf16/f32, T small) -> [T, rows] in x's dtype; one program per row block, token, K split."""
    T = x.shape[0]
    n_units = cols // layout.unit
    nu, even, per_split, split_k = _k_tiling(n_units, tiles.units, split_k)
    dst, split_stride = _result_buffers(x, rows, split_k)
    grid = (triton.cdiv(rows, tiles.block_n), T, split_k)
    _gemv_kernel[grid](
        dst, x, *args.tensors, rows, n_units, cols // layout.sub, x.stride(0), rows, split_stride, per_split,
        **format_constants(layout), BLOCK_N=tiles.block_n, NU=nu, EVEN_K=even, num_warps=tiles.num_warps,
    )  # fmt: skip
    return _result(dst, split_k, x.dtype)


def dot(
    x: torch.Tensor,
    args: PlaneArgs,
    layout: BlockLayout,
    rows: int,
    cols: int,
    tiles: DotTiles,
    split_k: int = 1,
) -> torch.Tensor:
    """x [T, cols] -> [T, rows] in x's dtype, through tl.dot on bf16 tiles."""
    T = x.shape[0]
    n_units = cols // layout.unit
    want = tiles.values // layout.unit
    nu, even, per_split, split_k = _k_tiling(n_units, want, split_k, least=4)  # tl.dot needs K >= 16
    dst, split_stride = _result_buffers(x, rows, split_k)
    grid = (triton.cdiv(rows, tiles.block_n) * triton.cdiv(T, tiles.block_t), split_k)
    _dot_kernel[grid](
        dst, x, *args.tensors, rows, n_units, cols // layout.sub, T, x.stride(0), rows, split_stride, per_split,
        **format_constants(layout), BLOCK_N=tiles.block_n, BLOCK_T=tiles.block_t, NU=nu, EVEN_K=even,
        WIDEN=INTERPRETING, num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )  # fmt: skip
    return _result(dst, split_k, x.dtype)


def dequantize(
    args: PlaneArgs, layout: BlockLayout, rows: int, cols: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """[rows, cols] values in `dtype` (f32: exactly gguf's)."""
    out = torch.empty((rows, cols), dtype=_kernel_dtype(dtype), device=device)
    n_units = cols // layout.unit
    nu = min(triton.next_power_of_2(n_units), 64)
    block_n = 16
    grid = (triton.cdiv(rows, block_n), triton.cdiv(n_units, nu))
    _dequant_kernel[grid](
        out, *args.tensors, rows, n_units, cols // layout.sub, out.stride(0), **format_constants(layout),
        BLOCK_N=block_n, NU=nu, num_warps=4,
    )  # fmt: skip
    return out.to(dtype)
