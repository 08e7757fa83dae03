// The IQ ("importance quantization") weight formats of GGUF: block layouts and
// kernels.
//
// Every IQ format stores a super-block of 256 weights (IQ4_NL: 32) as an fp16
// scale, small per-32 (or per-16) sub-block scales and indices into a fixed
// codebook ("grid") of 8 or 4 values, plus sign bits. The codebooks are ggml's;
// they are generated at build time from the gguf package into moebox/iq_grids.h
// (native/tools/gen_iq_grids.py).
//
// Per format: dequant_<fmt> (scalar reference, exact), vec_dot_<fmt>_q8_K (scalar
// integer dot product against block_q8_K activations, ggml's arithmetic) and
// vec_dot_<fmt>_q8_K_avx2 (same sums, AVX2); the codebook formats also have an
// AVX-512 VNNI variant (grid lookups by gather). IQ4_NL pairs with block_q8_0.
// Layouts are byte for byte those of ggml (ggml-common.h); all fp16 fields are
// raw IEEE half bits.
#pragma once
#include <cstdint>

#include "moebox/formats.h"

namespace moebox {

// IQ2_XXS, 2.0625 bits/weight, 66 bytes.
// qs holds 8 groups of 4 uint16 (= 2 uint32 per 32 weights): the first uint32 is
// four 8-bit grid indices (iq2xxs_grid, 8 values each); the second holds four
// 7-bit sign indices (ksigns_iq2xs) in bits 0..27 and the 4-bit sub-block scale
// s in bits 28..31. w = d * (0.5 + s) / 4 * grid * sign.
struct block_iq2_xxs {
  uint16_t d;
  uint16_t qs[QK_K / 8];
};
static_assert(sizeof(block_iq2_xxs) == 66, "block_iq2_xxs layout");

// IQ2_XS, 2.3125 bits/weight, 74 bytes.
// qs[k]: 9-bit grid index (iq2xs_grid) | 7-bit sign index << 9, one per 8 weights.
// scales[i]: two 4-bit scales, low nibble for weights 32i..32i+15, high for +16..+31.
struct block_iq2_xs {
  uint16_t d;
  uint16_t qs[QK_K / 8];
  uint8_t scales[QK_K / 32];
};
static_assert(sizeof(block_iq2_xs) == 74, "block_iq2_xs layout");

// IQ2_S, 2.5625 bits/weight, 82 bytes.
// qs[0..31]: low 8 bits of 10-bit grid indices (iq2s_grid), one per 8 weights;
// qs[32..63]: 8 explicit sign bits per 8 weights; qh[i]: bits 2l..2l+1 are the
// high index bits of group l (0..3) of sub-block i; scales as in IQ2_XS.
struct block_iq2_s {
  uint16_t d;
  uint8_t qs[QK_K / 4];
  uint8_t qh[QK_K / 32];
  uint8_t scales[QK_K / 32];
};
static_assert(sizeof(block_iq2_s) == 82, "block_iq2_s layout");

// IQ3_XXS, 3.0625 bits/weight, 98 bytes.
// qs[0..63]: 8-bit grid indices (iq3xxs_grid, 4 values each); qs[64..95]: one
// uint32 per 32 weights, four 7-bit sign indices + 4-bit scale in bits 28..31.
// w = d * (0.5 + s) / 2 * grid * sign.
struct block_iq3_xxs {
  uint16_t d;
  uint8_t qs[3 * QK_K / 8];
};
static_assert(sizeof(block_iq3_xxs) == 98, "block_iq3_xxs layout");

// IQ3_S, 3.4375 bits/weight, 110 bytes.
// qs: low 8 bits of 9-bit grid indices (iq3s_grid, 4 values each); qh[i] bit k:
// high index bit of qs[8i+k]; signs: one explicit sign bit per weight; scales:
// 4-bit scales per 32 weights (two per byte). w = d * (1 + 2s) * grid * sign.
struct block_iq3_s {
  uint16_t d;
  uint8_t qs[QK_K / 4];
  uint8_t qh[QK_K / 32];
  uint8_t signs[QK_K / 8];
  uint8_t scales[QK_K / 64];
};
static_assert(sizeof(block_iq3_s) == 110, "block_iq3_s layout");

// IQ1_S, 1.5625 bits/weight, 50 bytes.
// qs: low 8 bits of 11-bit grid indices (iq1s_grid: values -1/0/+1), one per 8
// weights; qh[i] (per 32 weights): bits 3l..3l+2 high index bits of group l,
// bits 12..14 the 3-bit scale s, bit 15 the sign of the shift delta.
// w = d * (2s + 1) * (grid ± 1/8).
struct block_iq1_s {
  uint16_t d;
  uint8_t qs[QK_K / 8];
  uint16_t qh[QK_K / 32];
};
static_assert(sizeof(block_iq1_s) == 50, "block_iq1_s layout");

// IQ1_M, 1.75 bits/weight, 56 bytes. No separate scale field: the fp16 super-block
// scale is spread over the top nibbles of the four uint16 in `scales`
// (bits 12..15 of each, least significant nibble first).
// qh[k] (per 16 weights): low nibble = 3 high index bits + delta sign bit of the
// first 8 weights, high nibble the same for the next 8. scales: 3-bit scales per
// 16 weights, four per uint16 (bits 0..11).
struct block_iq1_m {
  uint8_t qs[QK_K / 8];
  uint8_t qh[QK_K / 16];
  uint8_t scales[QK_K / 32];
};
static_assert(sizeof(block_iq1_m) == 56, "block_iq1_m layout");

// IQ4_NL, 4.5 bits/weight, 32 weights, 18 bytes: 4-bit indices into the
// non-linear table kvalues_iq4nl; low nibbles are weights 0..15, high 16..31.
constexpr int QK4_NL = 32;
struct block_iq4_nl {
  uint16_t d;
  uint8_t qs[QK4_NL / 2];
};
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl layout");

// IQ4_XS, 4.25 bits/weight, 136 bytes: IQ4_NL values with 6-bit scales per 32
// weights (low 4 bits in scales_l, high 2 bits in scales_h), biased by 32.
struct block_iq4_xs {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[QK_K / 64];
  uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs layout");

#define MOEBOX_IQ_KERNELS(fmt, act)                                                 \
  void dequant_##fmt(const void* src, float* dst, int64_t n);                       \
  float vec_dot_##fmt##_##act(int64_t n, const void* w_row, const void* act_row); \
  float vec_dot_##fmt##_##act##_avx2(int64_t n, const void* w_row, const void* act_row);

MOEBOX_IQ_KERNELS(iq1_s, q8_K)
MOEBOX_IQ_KERNELS(iq1_m, q8_K)
MOEBOX_IQ_KERNELS(iq2_xxs, q8_K)
MOEBOX_IQ_KERNELS(iq2_xs, q8_K)
MOEBOX_IQ_KERNELS(iq2_s, q8_K)
MOEBOX_IQ_KERNELS(iq3_xxs, q8_K)
MOEBOX_IQ_KERNELS(iq3_s, q8_K)
MOEBOX_IQ_KERNELS(iq4_nl, q8_0)
MOEBOX_IQ_KERNELS(iq4_xs, q8_K)
#undef MOEBOX_IQ_KERNELS

float vec_dot_iq1_s_q8_K_avx512(int64_t n, const void* w_row, const void* act_row);
float vec_dot_iq1_m_q8_K_avx512(int64_t n, const void* w_row, const void* act_row);
float vec_dot_iq2_xxs_q8_K_avx512(int64_t n, const void* w_row, const void* act_row);
float vec_dot_iq2_xs_q8_K_avx512(int64_t n, const void* w_row, const void* act_row);
float vec_dot_iq2_s_q8_K_avx512(int64_t n, const void* w_row, const void* act_row);
float vec_dot_iq3_xxs_q8_K_avx512(int64_t n, const void* w_row, const void* act_row);
float vec_dot_iq3_s_q8_K_avx512(int64_t n, const void* w_row, const void* act_row);

}  // namespace moebox
