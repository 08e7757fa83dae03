// Shared pieces of the IQ format kernels (iq1.cpp, iq2.cpp, iq3.cpp, iq4.cpp).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "moebox/formats.h"
#include "moebox/iq_grids.h"  // generated at build time from the gguf package
#include "moebox/quants_iq.h"

namespace moebox::iq {

// Byte j of a packed grid entry (8 values per uint64, 4 per uint32).
inline uint8_t grid_byte(uint64_t entry, int j) { return static_cast<uint8_t>(entry >> (8 * j)); }

inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline uint16_t load_u16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// The fp16 super-block scale of IQ1_M, spread over the top nibbles of its four
// uint16 scale words.
inline uint16_t iq1_m_scale_bits(const block_iq1_m& b) {
  uint16_t sc[4];
  std::memcpy(sc, b.scales, 8);
  return static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
}

MOEBOX_TARGET_AVX2 inline float hsum_f32x8(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

// Signed int8 x int8 -> pairwise int16 sums (maddubs needs one unsigned operand).
MOEBOX_TARGET_AVX2 inline __m256i mul_add_i8(__m256i x, __m256i y) {
  return _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// 32 explicit sign bits (one per weight, LSB first) -> 32 bytes of 0x00 / 0xff.
MOEBOX_TARGET_AVX2 inline __m256i sign_bits_to_mask(uint32_t bits) {
  const __m256i byte_of_bit = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                               3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit_of_byte = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int32_t>(bits)), byte_of_bit);
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit_of_byte), bit_of_byte);
}

// y * (mask ? -1 : +1) for a 0x00/0xff mask.
MOEBOX_TARGET_AVX2 inline __m256i apply_sign_mask(__m256i y, __m256i mask) {
  return _mm256_sub_epi8(_mm256_xor_si256(y, mask), mask);
}

// Eight 64-bit grid entries at the 32-bit indices in idx. One gather: on a
// Sapphire Rapids Xeon twice as fast as building the vector from scalar loads,
// and faster than mixing the two.
MOEBOX_TARGET_AVX512 inline __m512i lookup8(const uint64_t* grid, __m256i idx) {
  return _mm512_i32gather_epi64(idx, reinterpret_cast<const long long*>(grid), 8);
}

// For formats with one scale per 16 weights: int16 lane L of the k-th 64 weights
// of a super-block holds weights 64k + 2L, +1, whose scale is number 4k + L / 8.
alignas(64) inline constexpr uint16_t kScale16OfPair[4][32] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13,
     14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15}};

// IQ2_XS / IQ2_S: the 16 odd scales 2s + 1 (one per 16 weights) from the 8 bytes
// of two 4-bit scales each (low nibble first), as int16 in a 256-bit vector.
MOEBOX_TARGET_AVX512 inline __m256i nibble_scales16(const uint8_t* scales) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  const __m128i s = _mm_unpacklo_epi8(_mm_and_si128(b, m4), _mm_and_si128(_mm_srli_epi16(b, 4), m4));
  return _mm256_or_si256(_mm256_slli_epi16(_mm256_cvtepu8_epi16(s), 1), _mm256_set1_epi16(1));
}

// The 8 sign bytes of ksigns_iq2xs for the four 7-bit sign indices in bits 0..27
// of lo and of hi, as one 64-bit mask (bit j set: weight j is negative), without
// table lookups: each byte gets its 7 bits plus an even-parity bit 7. pdep is fast
// on every CPU with AVX-512.
MOEBOX_TARGET_AVX512 inline uint64_t ksigns_mask(uint32_t lo, uint32_t hi) {
  uint64_t s = _pdep_u64(lo, 0x7f7f7f7fULL) | (_pdep_u64(hi, 0x7f7f7f7fULL) << 32);
  uint64_t t = s ^ (s >> 4);  // bit 0 of each byte ends up as the parity of that byte
  t ^= t >> 2;
  t ^= t >> 1;
  return s | ((t & 0x0101010101010101ULL) << 7);
}

MOEBOX_TARGET_AVX2 inline float fp16_to_f32_f16c(uint16_t h) { return _cvtsh_ss(h); }

// One step (two sub-blocks of 32 weights) of the AVX2 dot of an IQ format whose weights
// are unsigned grid bytes with explicit signs: grid bytes, signs in the format's form
// (F::sign applies them to activations), int16 scale of each pair of weights.
struct SignedGridStep2 {
  __m256i grid[2], sign[2], scale[2];
};

// The AVX2 dot of such a format against NT activation rows (NT = 1: the dot product):
// F::step(block, ib) gives sub-blocks ib, ib + 1, shared by the tokens; per token F::sign
// puts the signs on the activations and vpmaddubsw + vpmaddwd apply grid and scales.
// F::kFactor as in signed_grid_avx512.
template <class F, int NT>
MOEBOX_TARGET_AVX2 void signed_grid_avx2(int64_t n, const void* w_row, const void* const* act_rows, float* out) {
  const auto* x = static_cast<const typename F::Block*>(w_row);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(act_rows[t]);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    __m256i sumi1[NT], sumi2[NT];
    for (int t = 0; t < NT; ++t) sumi1[t] = sumi2[t] = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib += 2) {
      const SignedGridStep2 s = F::step(x[i], ib);
      for (int t = 0; t < NT; ++t) {
        const int8_t* q8 = y[t][i].qs + 32 * ib;
        const __m256i y1 = F::sign(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8)), s.sign[0]);
        const __m256i y2 = F::sign(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32)), s.sign[1]);
        sumi1[t] = _mm256_add_epi32(sumi1[t], _mm256_madd_epi16(_mm256_maddubs_epi16(s.grid[0], y1), s.scale[0]));
        sumi2[t] = _mm256_add_epi32(sumi2[t], _mm256_madd_epi16(_mm256_maddubs_epi16(s.grid[1], y2), s.scale[1]));
      }
    }
    const float dx = _cvtsh_ss(x[i].d);
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[t][i].d), _mm256_cvtepi32_ps(_mm256_add_epi32(sumi1[t], sumi2[t])), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = F::kFactor * hsum_f32x8(acc[t]);
}

// Signs as ±1 bytes (ksigns_bytes) or as 0x00/0xff masks.
struct SignBytes {
  MOEBOX_TARGET_AVX2 static __m256i sign(__m256i y, __m256i s) { return _mm256_sign_epi8(y, s); }
};
struct SignMask {
  MOEBOX_TARGET_AVX2 static __m256i sign(__m256i y, __m256i m) { return apply_sign_mask(y, m); }
};

// IQ2_XS weights 64k .. 64k + 63 (q2: their 8 uint16 of index | signs << 9): grid bytes
// and sign bits (the AVX-512 dot and the AMX decoder).
MOEBOX_TARGET_AVX512 inline void iq2_xs_grid_signs(const uint8_t* q2, __m512i& grid, uint64_t& signs) {
  constexpr uint64_t kSignFields = 0xfe00fe00fe00fe00ULL;  // bits 9..15 of four uint16
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q2));
  grid = lookup8(iq2xs_grid, _mm256_and_si256(_mm256_cvtepu16_epi32(q), _mm256_set1_epi32(511)));
  uint64_t v[2];
  std::memcpy(v, q2, 16);
  signs = ksigns_mask(static_cast<uint32_t>(_pext_u64(v[0], kSignFields)), static_cast<uint32_t>(_pext_u64(v[1], kSignFields)));
}

// One step (64 weights) of the AVX-512 dot of an IQ format whose weights are unsigned grid
// bytes with explicit signs (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): the grid bytes, the
// sign bits (bit j set: weight j negative), the int16 scale of each pair of weights.
struct SignedGridStep {
  __m512i grid;
  uint64_t signs;
  __m512i scale;
};

// The AVX-512 dot of such a format against NT activation rows (NT = 1: the dot product).
// F::step(block, prep, k) gives step k of a super-block (prep = F::prepare(block), the
// per-block work its steps share); it is shared by the tokens, and per token the signs
// go onto the activations (grid bytes < 0x40, so vpmaddubsw pair sums stay below
// 2 * 63 * 127) and vpdpwssd applies the scales while accumulating. F::kFactor is the
// format's constant factor (0.125 for the 2-bit grids, 0.25 for IQ3_XXS).
template <class F, int NT>
MOEBOX_TARGET_AVX512 void signed_grid_avx512(int64_t n, const void* w_row, const void* const* act_rows, float* out) {
  const auto* x = static_cast<const typename F::Block*>(w_row);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(act_rows[t]);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const auto prep = F::prepare(x[i]);
    __m512i sumi[NT];
    for (int t = 0; t < NT; ++t) sumi[t] = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) {
      const SignedGridStep s = F::step(x[i], prep, k);
      for (int t = 0; t < NT; ++t) {
        const __m512i a = _mm512_loadu_si512(y[t][i].qs + 64 * k);
        const __m512i as = _mm512_mask_sub_epi8(a, s.signs, _mm512_setzero_si512(), a);
        sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_maddubs_epi16(s.grid, as), s.scale);
      }
    }
    const float dx = _cvtsh_ss(x[i].d);
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(dx * y[t][i].d), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = F::kFactor * _mm512_reduce_add_ps(acc[t]);
}

// Scales of sub-blocks 2k (int16 lanes 0..15) and 2k + 1 (16..31), odd factors given.
MOEBOX_TARGET_AVX512 inline __m512i pair_scales(int lo, int hi) {
  return _mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16(static_cast<int16_t>(lo)),
                                 _mm512_set1_epi16(static_cast<int16_t>(hi)));
}

}  // namespace moebox::iq
