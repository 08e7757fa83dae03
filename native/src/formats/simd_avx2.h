// Small AVX2 building blocks shared by the formats' AVX2 dot products.
// Every function carries MOEBOX_TARGET_AVX2, so including this header never
// makes code outside AVX2 paths use AVX2 instructions.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "moebox/formats.h"

namespace moebox::avx2 {

MOEBOX_TARGET_AVX2 inline float hsum(__m256 x) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

MOEBOX_TARGET_AVX2 inline float hsum(__m128 r) {
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

// One fp16 -> f32 with F16C (the portable fp16_to_f32 branches; too slow per block).
MOEBOX_TARGET_AVX2 inline float fp16(uint16_t h) { return _cvtsh_ss(h); }

// Two consecutive fp16 (a k-quant block's d and dmin) -> f32 lanes 0 and 1, one conversion.
MOEBOX_TARGET_AVX2 inline __m128 fp16x2(const uint16_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(v)));
}

// f32 -> fp16, round to nearest even.
MOEBOX_TARGET_AVX2 inline uint16_t to_fp16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// 16 bytes of packed nibbles -> 32 bytes: low nibbles in bytes 0..15, high in 16..31.
MOEBOX_TARGET_AVX2 inline __m256i bytes_from_nibbles_32(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i b = _mm256_insertf128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
  return _mm256_and_si256(_mm256_set1_epi8(0x0F), b);
}

// 32 bits -> 32 bytes, byte j = 0xFF where bit j is set.
MOEBOX_TARGET_AVX2 inline __m256i bytes_from_bits_32(const uint8_t* p) {
  uint32_t x32;
  std::memcpy(&x32, p, 4);
  const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(x32)), shuf);
  bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

// sum of u8*s8 products in 8 int32 lanes (pairs may not saturate: |u*s*2| < 32768).
MOEBOX_TARGET_AVX2 inline __m256i dot_us8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(u, s));
}

// sum of s8*s8 products in 8 int32 lanes (x = -128 allowed only if y != -128).
MOEBOX_TARGET_AVX2 inline __m256i dot_s8(__m256i x, __m256i y) {
  return dot_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// Sum of 32 int8 in 8 int32 lanes.
MOEBOX_TARGET_AVX2 inline __m256i sum_s8(__m256i y) { return dot_us8(_mm256_set1_epi8(1), y); }

// Sum of 8 int32 lanes.
MOEBOX_TARGET_AVX2 inline int hsum_epi32(__m256i x) {
  __m128i r = _mm_add_epi32(_mm256_extracti128_si256(x, 1), _mm256_castsi256_si128(x));
  r = _mm_add_epi32(r, _mm_unpackhi_epi64(r, r));
  r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 1));
  return _mm_cvtsi128_si32(r);
}

// Shuffle that broadcasts the 16-bit lane i of each 128-bit half to the whole half.
MOEBOX_TARGET_AVX2 inline __m256i broadcast_epi16_shuffle(int i) {
  return _mm256_set1_epi16(static_cast<short>(((2 * i + 1) << 8) | (2 * i)));
}

// Shuffle for two 128-bit halves: low half broadcasts 16-bit lane a, high half lane b.
MOEBOX_TARGET_AVX2 inline __m256i broadcast_epi16_shuffle2(int a, int b) {
  const __m128i lo = _mm_set1_epi16(static_cast<short>(((2 * a + 1) << 8) | (2 * a)));
  const __m128i hi = _mm_set1_epi16(static_cast<short>(((2 * b + 1) << 8) | (2 * b)));
  return _mm256_set_m128i(hi, lo);
}

// The 12 packed scale bytes of a Q4_K/Q5_K super-block (6-bit scales and mins of its 8
// sub-blocks) as 16 bytes [scale 0..7, min 0..7]: unpack_scales_mins_k4 in a few vector
// ops. Reads 16 bytes at p: the block's first 4 quant bytes follow its scales.
MOEBOX_TARGET_AVX2 inline __m128i scales_mins_k4(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  // bytes 0-3: scales 0-3 (bits 6-7: high bits of scales 4-7), 4-7: mins 0-3 (bits 6-7:
  // high bits of mins 4-7), 8-11: low nibble scale 4-7, high nibble min 4-7
  const __m128i a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const __m128i b = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
  const __m128i low6 = _mm_and_si128(a, _mm_set1_epi8(63));
  const __m128i nibbles = _mm_and_si128(_mm_blend_epi32(a, _mm_srli_epi16(a, 4), 0x8), _mm_set1_epi8(0xF));
  const __m128i high2 = _mm_and_si128(_mm_srli_epi16(b, 2), _mm_set1_epi8(0x30));  // bits 6-7 -> 4-5
  return _mm_blend_epi32(low6, _mm_or_si128(nibbles, high2), 0xA);
}

// The 8 minimums of scales_mins_k4's result (bytes 8..15) as 16 int16, each twice: one
// per activation block sum (two bsums of 16 per Q4_K/Q5_K sub-block of 32), for one
// vpmaddwd against the 16 bsums.
MOEBOX_TARGET_AVX2 inline __m256i mins_k4_per_bsum(__m128i scales_mins) {
  return _mm256_cvtepu8_epi16(
      _mm_shuffle_epi8(scales_mins, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
}

// 8 fp16 -> 8 f32.
MOEBOX_TARGET_AVX2 inline __m256 load_fp16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// 8 bf16 -> 8 f32.
MOEBOX_TARGET_AVX2 inline __m256 load_bf16x8(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

}  // namespace moebox::avx2
