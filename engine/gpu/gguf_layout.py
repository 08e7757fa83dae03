"""How each GGUF block format is laid out in VRAM for the Triton kernels (engine/gpu/gguf_kernels.py).

A GGUF block interleaves fp16 scales, packed sub-block scales and quant bits, so most
blocks (18, 34, 110, 210 bytes, ...) cannot be read with aligned loads. At load the blocks
are split, exactly, into planes that the kernels read with 16-byte loads:

  lo   int32 [rows, units * 4]      the low `lo_bits` of every quant, 4 words per unit
  hi   uint8/int16 [rows, units * 4]  the high bits (Q5_x, Q5_K, Q6_K, Q3_K), one per lo word
  sc   int8/uint8/int16 [rows, subs]  the sub-block scale (and min) of the K-quants and IQ4_XS
  d, m fp16 [rows, blocks]          the block scale and the block min (or its scale)

A unit is the 4 words (16 bytes) of low bits of 128 / lo_bits consecutive values. Inside it
the quants are stored plane by plane: value 4p + w of the unit sits in word w at bits
[lo_bits * p, +lo_bits), and its high bits in hi word w at bits [hi_bits * p, +hi_bits). So
plane p of a tile of words is one shift and one mask away, its values meet 4 consecutive
activations, and every tile the kernels load (quants, high bits, activations) has the same
shape and contiguity, hence the same register layout. A sub-block is the run of `sub` values
that shares one scale: a unit holds one or more of them (planes p with 4p // sub alike), or a
part of one. Where the file's own order differs, the repack permutes bits, nothing else: the
values the kernels compute equal gguf.quants.dequantize bit for bit.

Bytes held are the GGUF size, except where 6-bit sub-block scales are unpacked to one byte
(Q3_K 114 vs 110, Q4_K 148 vs 144, Q5_K 180 vs 176, IQ4_XS 138 vs 136 bytes per 256 values).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from engine.errors import UnsupportedModelError

Q = GGMLQuantizationType


class Levels(IntEnum):
    """How the integer read from the planes becomes a value before scaling."""

    INT = 0  # (lo | hi << lo_bits) - zero
    TABLE = 1  # IQ4's non-linear levels: IQ4_LEVELS[lo]
    F16 = 2  # the 16 bits are an IEEE half


class Scales(IntEnum):
    """How a level is scaled (d, m per block; sc, mn per sub-block), as gguf computes it."""

    NONE = 0  # F16
    D = 1  # d * q                          Q4_0 Q5_0 Q8_0 IQ4_NL
    D_M = 2  # d * q + m                    Q4_1 Q5_1
    D_SC = 3  # (d * sc) * q, sc signed      Q3_K Q6_K IQ4_XS
    D_SC_MIN = 4  # (d * sc) * q - m * mn   Q2_K Q4_K Q5_K (m holds dmin)


# llama.cpp's kvalues_iq4nl
IQ4_LEVELS = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


@dataclass(frozen=True)
class BlockLayout:
    """One GGUF format: where its bits are in a block, and how the kernels turn them into values."""

    ggml_type: Q
    sub: int  # elements per sub-block (one scale)
    lo_bits: int
    lo_byte: Callable[[np.ndarray], np.ndarray]  # element index in the block -> byte of its low bits
    lo_shift: Callable[[np.ndarray], np.ndarray]  # ... and the bit where they start
    hi_bits: int = 0
    hi_byte: Callable[[np.ndarray], np.ndarray] | None = None
    hi_shift: Callable[[np.ndarray], np.ndarray] | None = None
    lo_xor: int = 0  # Q8_0 stores int8 quants as offset binary (q ^ 0x80), so all planes are unsigned
    zero: int = 0
    levels: Levels = Levels.INT
    scales: Scales = Scales.D
    d_offset: int = 0  # byte offset of the fp16 block scale d
    m_offset: int | None = None  # byte offset of the fp16 min (Q4_1, Q5_1) or dmin (K-quants)
    sub_scales: Callable[[torch.Tensor], torch.Tensor] | None = None  # blocks [n, bytes] -> sc [n, subs]
    sc_bits: int = 0  # D_SC_MIN: sc = packed & (2**sc_bits - 1), mn = packed >> sc_bits
    block: int = field(init=False)
    block_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        block, block_bytes = GGML_QUANT_SIZES[self.ggml_type]
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "block_bytes", block_bytes)

    @property
    def planes(self) -> int:
        return 32 // self.lo_bits

    @property
    def unit(self) -> int:
        """Values per unit (4 words of low bits)."""
        return 4 * self.planes

    @property
    def subs_per_block(self) -> int:
        return self.block // self.sub


def _k_scale_min(blocks: torch.Tensor) -> torch.Tensor:
    """Q4_K/Q5_K: the 12 bytes of 6-bit scales and mins -> int16 sc | mn << 8, [n, 8]."""
    s = blocks[:, 4:16].to(torch.int16)
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=1)
    return sc | (mn << 8)


def _q3_k_scales(blocks: torch.Tensor) -> torch.Tensor:
    """Q3_K: 16 6-bit scales (4 low bits in bytes 0-7, 2 high bits in bytes 8-11) -> int8 sc - 32."""
    s = blocks[:, 96:108]
    i = torch.arange(16, device=blocks.device)
    low = (s[:, i % 8] >> (4 * (i // 8)).to(torch.uint8)) & 0x0F
    high = (s[:, 8 + i % 4] >> (2 * (i // 4)).to(torch.uint8)) & 0x03
    return ((low | (high << 4)).to(torch.int16) - 32).to(torch.int8)


def _q6_k_scales(blocks: torch.Tensor) -> torch.Tensor:
    return blocks[:, 192:208].contiguous().view(torch.int8)


def _q2_k_scales(blocks: torch.Tensor) -> torch.Tensor:
    """Q2_K: one byte per 16 values, scale in the low nibble and min in the high one (kept packed)."""
    return blocks[:, 0:16].contiguous()


def _iq4_xs_scales(blocks: torch.Tensor) -> torch.Tensor:
    """IQ4_XS: 8 6-bit scales (high 2 bits in a u16 at byte 2, low 4 bits in bytes 4-7) -> int8 sc - 32."""
    ib = torch.arange(8, device=blocks.device)
    high16 = blocks[:, 2].to(torch.int32) | (blocks[:, 3].to(torch.int32) << 8)
    low = (blocks[:, 4 + ib // 2] >> (4 * (ib % 2)).to(torch.uint8)) & 0x0F
    high = (high16[:, None] >> (2 * ib)) & 0x03
    return ((low.to(torch.int32) | (high << 4)) - 32).to(torch.int8)


def _legacy(ggml_type: Q, *, lo_at: int, hi_at: int | None = None, **kw) -> BlockLayout:
    """The 32-value formats: byte j holds value j in its low nibble and value j + 16 in its high one."""
    hi = {}
    if hi_at is not None:
        hi = dict(hi_bits=1, hi_byte=lambda e: hi_at + e // 8, hi_shift=lambda e: e % 8)
    return BlockLayout(
        ggml_type,
        sub=32,
        lo_bits=4,
        lo_byte=lambda e: lo_at + e % 16,
        lo_shift=lambda e: 4 * (e // 16),
        **hi,
        **kw,
    )


LAYOUTS: dict[Q, BlockLayout] = {
    layout.ggml_type: layout
    for layout in [
        BlockLayout(
            Q.Q8_0,
            sub=32,
            lo_bits=8,
            lo_byte=lambda e: 2 + e,
            lo_shift=lambda e: 0 * e,
            lo_xor=0x80,
            zero=128,
        ),
        _legacy(Q.Q4_0, lo_at=2, zero=8),
        _legacy(Q.Q4_1, lo_at=4, scales=Scales.D_M, m_offset=2),
        _legacy(Q.Q5_0, lo_at=6, hi_at=2, zero=16),
        _legacy(Q.Q5_1, lo_at=8, hi_at=4, scales=Scales.D_M, m_offset=2),
        _legacy(Q.IQ4_NL, lo_at=2, levels=Levels.TABLE),
        # Q2_K: scales[16] qs[64] d dmin; qs byte 32h + l holds values 128h + 32j + l at bits 2j
        BlockLayout(
            Q.Q2_K,
            sub=16,
            lo_bits=2,
            lo_byte=lambda e: 16 + 32 * (e // 128) + e % 32,
            lo_shift=lambda e: 2 * (e % 128 // 32),
            scales=Scales.D_SC_MIN,
            d_offset=80,
            m_offset=82,
            sub_scales=_q2_k_scales,
            sc_bits=4,
        ),
        # Q3_K: hmask[32] qs[64] scales[12] d; hmask byte l bit i is the high bit of value 32i + l
        BlockLayout(
            Q.Q3_K,
            sub=16,
            lo_bits=2,
            lo_byte=lambda e: 32 + 32 * (e // 128) + e % 32,
            lo_shift=lambda e: 2 * (e % 128 // 32),
            hi_bits=1,
            hi_byte=lambda e: e % 32,
            hi_shift=lambda e: e // 32,
            zero=4,
            scales=Scales.D_SC,
            d_offset=108,
            sub_scales=_q3_k_scales,
        ),
        # Q4_K: d dmin scales[12] qs[128]; qs byte 32c + l holds values 64c + l and 64c + 32 + l
        BlockLayout(
            Q.Q4_K,
            sub=32,
            lo_bits=4,
            lo_byte=lambda e: 16 + 32 * (e // 64) + e % 32,
            lo_shift=lambda e: 4 * (e // 32 % 2),
            scales=Scales.D_SC_MIN,
            d_offset=0,
            m_offset=2,
            sub_scales=_k_scale_min,
            sc_bits=8,
        ),
        # Q5_K: d dmin scales[12] qh[32] qs[128]
        BlockLayout(
            Q.Q5_K,
            sub=32,
            lo_bits=4,
            lo_byte=lambda e: 48 + 32 * (e // 64) + e % 32,
            lo_shift=lambda e: 4 * (e // 32 % 2),
            hi_bits=1,
            hi_byte=lambda e: 16 + e % 32,
            hi_shift=lambda e: e // 32,
            scales=Scales.D_SC_MIN,
            d_offset=0,
            m_offset=2,
            sub_scales=_k_scale_min,
            sc_bits=8,
        ),
        # Q6_K: ql[128] qh[64] scales[16] d; per half of 128 values, ql byte l holds l and 64 + l,
        # qh byte l holds the 2 high bits of l, 32 + l, 64 + l, 96 + l
        BlockLayout(
            Q.Q6_K,
            sub=16,
            lo_bits=4,
            lo_byte=lambda e: 64 * (e // 128) + e % 64,
            lo_shift=lambda e: 4 * (e % 128 // 64),
            hi_bits=2,
            hi_byte=lambda e: 128 + 32 * (e // 128) + e % 32,
            hi_shift=lambda e: 2 * (e % 128 // 32),
            zero=32,
            scales=Scales.D_SC,
            d_offset=208,
            sub_scales=_q6_k_scales,
        ),
        # IQ4_XS: d scales_h scales_l[4] qs[128]; qs byte 16ib + l holds values 32ib + l and 32ib + 16 + l
        BlockLayout(
            Q.IQ4_XS,
            sub=32,
            lo_bits=4,
            lo_byte=lambda e: 8 + 16 * (e // 32) + e % 16,
            lo_shift=lambda e: 4 * (e % 32 // 16),
            levels=Levels.TABLE,
            scales=Scales.D_SC,
            d_offset=0,
            sub_scales=_iq4_xs_scales,
        ),
        # F16 through the same kernels (a bf16 activation times an f16 weight has no torch matmul);
        # "sub-blocks" of 32 values, 16 words each: word w holds values w and 16 + w.
        BlockLayout(
            Q.F16,
            sub=32,
            lo_bits=16,
            lo_byte=lambda e: 2 * e,
            lo_shift=lambda e: 0 * e,
            levels=Levels.F16,
            scales=Scales.NONE,
        ),
    ]
}

# BF16 stays a torch tensor multiplied by torch (see GpuQuantMatrix).
GPU_TYPES = frozenset(LAYOUTS) | {Q.BF16}

# Rows repacked per step: bounds the temporaries (a byte per value, a few times over) on the device.
_REPACK_VALUES = 1 << 24


def layout_of(ggml_type: int) -> BlockLayout:
    try:
        return LAYOUTS[Q(ggml_type)]
    except (KeyError, ValueError):
        name = Q(ggml_type).name if ggml_type in Q._value2member_map_ else str(ggml_type)
        raise UnsupportedModelError(
            f"tensor type {name} has no GPU kernel; keep tensors of this type on the CPU (-ot REGEX=CPU)"
        ) from None


@dataclass
class PackedPlanes:
    """The planes of one or more [rows, cols] matrices, stacked along rows; see the module docstring."""

    lo: torch.Tensor
    hi: torch.Tensor | None
    sc: torch.Tensor | None
    d: torch.Tensor | None
    m: torch.Tensor | None

    def fields(self) -> tuple[torch.Tensor | None, ...]:
        return (self.lo, self.hi, self.sc, self.d, self.m)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.fields() if t is not None)


def _bit_positions(byte_of, shift_of, block: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    e = np.arange(block)
    byte = torch.as_tensor(np.asarray(byte_of(e), dtype=np.int64), device=device)
    shift = torch.as_tensor(np.asarray(shift_of(e), dtype=np.uint8), device=device)
    return byte, shift


def _pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """[..., n] of `bits`-bit values (n * bits = 8, 16 or 32) -> one uint8/int16/int32 per row of n,
    value i at bits [bits * i, +bits)."""
    n = values.shape[-1]
    if bits == 16:  # F16: the values are int16 already
        return values.contiguous().view(torch.int32)[..., 0]
    per_byte = 8 // bits
    v = values.reshape(*values.shape[:-1], n // per_byte, per_byte)
    packed = v[..., 0].clone()
    for i in range(1, per_byte):
        packed |= v[..., i] << (bits * i)  # [..., bytes]
    word = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[packed.shape[-1]]
    return packed.contiguous().view(word)[..., 0]


def _by_plane(values: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
    """[n, cols] -> [n, units, 4 (word), planes]: value 4p + w of each unit at [..., w, p]."""
    n = values.shape[0]
    return values.reshape(n, -1, layout.planes, 4).transpose(2, 3)


def _repack_rows(raw: torch.Tensor, layout: BlockLayout) -> PackedPlanes:
    """raw uint8 [n, row_bytes] GGUF rows -> their planes."""
    n = raw.shape[0]
    if layout.lo_bits == 16:  # F16: the 16-bit values are the low plane
        return PackedPlanes(
            _pack_bits(_by_plane(raw.view(torch.int16), layout), 16).reshape(n, -1), None, None, None, None
        )
    blocks = raw.reshape(-1, layout.block_bytes)  # [n * blocks_per_row, block_bytes]
    byte, shift = _bit_positions(layout.lo_byte, layout.lo_shift, layout.block, raw.device)
    lo = ((blocks[:, byte] >> shift) & ((1 << layout.lo_bits) - 1)) ^ layout.lo_xor  # [nb, block]
    planes = PackedPlanes(
        _pack_bits(_by_plane(lo.reshape(n, -1), layout), layout.lo_bits).reshape(n, -1),
        None,
        None,
        None,
        None,
    )
    if layout.hi_bits:
        byte, shift = _bit_positions(layout.hi_byte, layout.hi_shift, layout.block, raw.device)
        hi = (blocks[:, byte] >> shift) & ((1 << layout.hi_bits) - 1)
        planes.hi = _pack_bits(_by_plane(hi.reshape(n, -1), layout), layout.hi_bits).reshape(n, -1)
    if layout.sub_scales is not None:
        planes.sc = layout.sub_scales(blocks).reshape(n, -1)
    if layout.scales != Scales.NONE:
        planes.d = (
            blocks[:, layout.d_offset : layout.d_offset + 2].contiguous().view(torch.float16).reshape(n, -1)
        )
    if layout.m_offset is not None:
        planes.m = (
            blocks[:, layout.m_offset : layout.m_offset + 2].contiguous().view(torch.float16).reshape(n, -1)
        )
    return planes


def repack(
    blocks: np.ndarray, layout: BlockLayout, rows: int, cols: int, device: torch.device
) -> PackedPlanes:
    """GGUF bytes of `rows` rows of `cols` values (matrices stacked along rows) -> planes on `device`.

    The bytes travel to the device a slice of rows at a time and are repacked there."""
    row_bytes = cols // layout.block * layout.block_bytes
    if cols % layout.block or blocks.size != rows * row_bytes:
        raise UnsupportedModelError(
            f"{rows} x {cols} {layout.ggml_type.name} needs rows of whole blocks of {layout.block} values "
            f"({rows * row_bytes} bytes); got {blocks.size} bytes"
        )
    raw = blocks.reshape(rows, row_bytes)
    step = max(1, _REPACK_VALUES // cols)
    packed: PackedPlanes | None = None
    with warnings.catch_warnings():  # mmapped GGUF bytes are read-only; they are only read here
        warnings.simplefilter("ignore", UserWarning)
        for r in range(0, rows, step):
            part = _repack_rows(torch.from_numpy(raw[r : r + step]).to(device), layout)
            if packed is None:
                if step >= rows:
                    return part
                packed = PackedPlanes(*(_rows_like(t, rows) for t in part.fields()))
            for whole, t in zip(packed.fields(), part.fields(), strict=True):
                if t is not None:
                    whole[r : r + t.shape[0]] = t
    assert packed is not None
    return packed


def _rows_like(t: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    return None if t is None else t.new_empty((rows, *t.shape[1:]))
