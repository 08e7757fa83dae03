// AMX tile kernels for IQ weights against Q8_K activations (see moebox/amx.h): each
// format decodes a super-block to int8 table values and int16 sub-block scales for the
// Int8ScaledTiles slot of amx_tiles.h, which does the rest. The decoders take their
// index, sign and scale unpacking from the formats' AVX-512 vec_dots (iq1.cpp .. iq3.cpp)
// and put the signs on the weights (there they go on the activations).
#include "amx_tiles.h"
#include "iq_common.h"

namespace moebox {
namespace {

using namespace amx_tiles;

// IQ4_XS: 8 sub-blocks of 32, value = kvalues_iq4nl[nibble] (int8 in [-127, 113]),
// scale = 6-bit ls - 32 in [-32, 31]: s v within 4064. Sub-block ib is qs[16ib..16ib+15]:
// low nibbles its elements 0..15, high nibbles 16..31.
MOEBOX_TARGET_AMX inline void decode_iq4_xs(const block_iq4_xs& x, Int8Block& b) {
  b.d = _cvtsh_ss(x.d);
  alignas(32) int16_t s[16];
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const int lo = (x.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
    const int hi = (x.scales_h >> (2 * ib)) & 3;
    s[2 * ib] = s[2 * ib + 1] = static_cast<int16_t>((lo | (hi << 4)) - 32);
  }
  b.s = _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(s)));
  const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(iq::kvalues_iq4nl)));
  const __m512i shift = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);  // lanes 1 and 3: high nibbles
  for (int c = 0; c < 4; ++c) {
    // Chunk c = sub-blocks 2c, 2c+1 = qs[32c..32c+31]: lanes [low, high nibbles of its first
    // 16 bytes, low, high of the next 16].
    const __m512i bytes = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs + 32 * c)));
    const __m512i lanes = _mm512_shuffle_i64x2(bytes, bytes, _MM_SHUFFLE(1, 1, 0, 0));
    const __m512i idx = _mm512_and_si512(_mm512_srlv_epi64(lanes, shift), _mm512_set1_epi8(0xF));
    b.v[c] = _mm512_shuffle_epi8(table, idx);
  }
}

// IQ1_S / IQ1_M: value = d (2s + 1) (grid ± 1/8) with grid in {-1, 0, 1}. Exact in the
// slot as d/8 times the odd scale times v = 8 grid ± 1 in {-9, -7, -1, 1, 7, 9}: the
// shift needs no activation sums. |s v| <= 15 * 9 = 135. iq1s_grid_x8p9 holds 8 grid + 9,
// so v = that - 8 (delta +1/8) or - 10 (delta -1/8).

// Sub-block (32) delta signs, 2 bits per chunk -> its 8 qwords (groups of 8 values).
inline constexpr uint8_t kIq1Halves[4] = {0x00, 0x0f, 0xf0, 0xff};

MOEBOX_TARGET_AMX inline void decode_iq1_s(const block_iq1_s& x, Int8Block& b) {
  // Group g (of 8 values, 0..31) takes qh word g / 4 bits 3 (g % 4) as its high index bits.
  alignas(64) static const uint16_t kWord[32] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                                 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7};
  alignas(64) static const uint16_t kShift[32] = {0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9,
                                                  0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9};
  alignas(32) static const uint16_t kSubBlockOf16[16] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7};
  b.d = 0.125f * _cvtsh_ss(x.d);
  const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.qh));
  const __m512i qs16 = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs)));
  const __m512i hi = _mm512_and_si512(
      _mm512_srlv_epi16(_mm512_permutexvar_epi16(_mm512_load_si512(kWord), _mm512_castsi128_si512(qh)), _mm512_load_si512(kShift)),
      _mm512_set1_epi16(7));
  const __m512i idx = _mm512_or_si512(qs16, _mm512_slli_epi16(hi, 8));
  const unsigned negative = _mm_movepi16_mask(qh);  // bit ib: delta of sub-block ib is -1/8
  const __m128i ls = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)), _mm_set1_epi16(1));
  b.s = _mm512_castsi256_si512(_mm256_permutexvar_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(kSubBlockOf16)),
                                                        _mm256_castsi128_si256(ls)));
  const __m512i plus = _mm512_set1_epi8(8), minus = _mm512_set1_epi8(10);
  for (int c = 0; c < 4; ++c) {
    const __m512i g = iq::lookup8(iq::iq1s_grid_x8p9, _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, c)));
    b.v[c] = _mm512_sub_epi8(g, _mm512_mask_blend_epi64(kIq1Halves[(negative >> (2 * c)) & 3], plus, minus));
  }
}

MOEBOX_TARGET_AMX inline void decode_iq1_m(const block_iq1_m& x, Int8Block& b) {
  // Group g (of 8 values) takes qh byte g / 2, its low nibble (g even) or high nibble: 3 high
  // index bits and the delta sign.
  alignas(64) static const uint16_t kByte[32] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7,
                                                 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15};
  alignas(64) static const uint16_t kShift[32] = {0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4,
                                                  0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4};
  b.d = 0.125f * _cvtsh_ss(iq::iq1_m_scale_bits(x));
  const __m512i qs16 = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs)));
  const __m512i qh16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.qh))));
  const __m512i nib = _mm512_srlv_epi16(_mm512_permutexvar_epi16(_mm512_load_si512(kByte), qh16), _mm512_load_si512(kShift));
  const __m512i idx = _mm512_or_si512(qs16, _mm512_slli_epi16(_mm512_and_si512(nib, _mm512_set1_epi16(7)), 8));
  const uint32_t negative = _mm512_test_epi16_mask(nib, _mm512_set1_epi16(8));  // bit g: delta of group g is -1/8
  // Scale m (per 16 values) is bits 3 (m % 4) of scale word m / 4, as the odd factor 2 s + 1.
  uint64_t sc;
  std::memcpy(&sc, x.scales, 8);
  const __m256i words = _mm256_permutexvar_epi16(_mm256_setr_epi16(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                                 _mm256_castsi128_si256(_mm_cvtsi64_si128(static_cast<long long>(sc))));
  const __m256i shifts = _mm256_setr_epi16(0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9);
  b.s = _mm512_castsi256_si512(_mm256_or_si256(
      _mm256_slli_epi16(_mm256_and_si256(_mm256_srlv_epi16(words, shifts), _mm256_set1_epi16(7)), 1), _mm256_set1_epi16(1)));
  const __m512i plus = _mm512_set1_epi8(8), minus = _mm512_set1_epi8(10);
  for (int c = 0; c < 4; ++c) {
    const __m512i g = iq::lookup8(iq::iq1s_grid_x8p9, _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, c)));
    b.v[c] = _mm512_sub_epi8(g, _mm512_mask_blend_epi64(static_cast<__mmask8>(negative >> (8 * c)), plus, minus));
  }
}

// IQ2_XXS / IQ2_XS / IQ2_S: value = d/8 (2s + 1) grid, grid bytes 8 / 25 / 43 with a sign
// per value: |s v| <= 31 * 43 = 1333.

// Negates the bytes of v whose bit is set in signs.
MOEBOX_TARGET_AMX inline __m512i apply_signs(__m512i v, uint64_t signs) {
  return _mm512_mask_sub_epi8(v, signs, _mm512_setzero_si512(), v);
}

// One odd scale 2 s + 1 per 32 values (the top 4 bits of a uint32) into words 2j, 2j + 1 of s.
MOEBOX_TARGET_AMX inline void set_scale32(int16_t* s, int j, uint32_t aux) {
  s[2 * j] = s[2 * j + 1] = static_cast<int16_t>(2 * (aux >> 28) + 1);
}

MOEBOX_TARGET_AMX inline void decode_iq2_xxs(const block_iq2_xxs& x, Int8Block& b) {
  b.d = 0.125f * _cvtsh_ss(x.d);
  alignas(32) int16_t s[16];
  const auto* q2 = reinterpret_cast<const uint8_t*>(x.qs);
  for (int c = 0; c < 4; ++c, q2 += 16) {
    uint32_t a[4];  // sub-block 2c: a[0] four grid indices, a[1] signs + scale; sub-block 2c + 1: a[2], a[3]
    std::memcpy(a, q2, 16);
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, static_cast<int>(a[2]), static_cast<int>(a[0])));
    b.v[c] = apply_signs(iq::lookup8(iq::iq2xxs_grid, idx), iq::ksigns_mask(a[1], a[3]));
    set_scale32(s, 2 * c, a[1]);
    set_scale32(s, 2 * c + 1, a[3]);
  }
  b.s = _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(s)));
}

MOEBOX_TARGET_AMX inline void decode_iq2_xs(const block_iq2_xs& x, Int8Block& b) {
  b.d = 0.125f * _cvtsh_ss(x.d);
  b.s = _mm512_castsi256_si512(iq::nibble_scales16(x.scales));
  for (int c = 0; c < 4; ++c) {
    __m512i grid;
    uint64_t signs;
    iq::iq2_xs_grid_signs(reinterpret_cast<const uint8_t*>(x.qs) + 16 * c, grid, signs);
    b.v[c] = apply_signs(grid, signs);
  }
}

MOEBOX_TARGET_AMX inline void decode_iq2_s(const block_iq2_s& x, Int8Block& b) {
  // Group l of the 8 of a chunk: qh byte l / 4 of the chunk's two, bits 2 (l % 4), +1.
  const __m256i qh_lane = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  const __m256i qh_shift = _mm256_setr_epi32(8, 6, 4, 2, 8, 6, 4, 2);
  b.d = 0.125f * _cvtsh_ss(x.d);
  b.s = _mm512_castsi256_si512(iq::nibble_scales16(x.scales));
  const uint8_t* qs = x.qs;
  const uint8_t* signs = x.qs + QK_K / 8;
  for (int c = 0; c < 4; ++c, qs += 8, signs += 8) {
    const __m256i lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs)));
    const __m256i qh = _mm256_permutevar8x32_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi32_si128(iq::load_u16(x.qh + 2 * c))), qh_lane);
    const __m256i idx = _mm256_or_si256(lo, _mm256_and_si256(_mm256_sllv_epi32(qh, qh_shift), _mm256_set1_epi32(0x300)));
    uint64_t sign_bits;
    std::memcpy(&sign_bits, signs, 8);
    b.v[c] = apply_signs(iq::lookup8(iq::iq2s_grid, idx), sign_bits);
  }
}

// IQ3_XXS: value = d/4 (2s + 1) grid, grid bytes up to 62: |s v| <= 31 * 62 = 1922.
MOEBOX_TARGET_AMX inline void decode_iq3_xxs(const block_iq3_xxs& x, Int8Block& b) {
  const auto* grid = reinterpret_cast<const int*>(iq::iq3xxs_grid);
  b.d = 0.25f * _cvtsh_ss(x.d);
  alignas(32) int16_t s[16];
  const uint8_t* q3 = x.qs;
  const uint8_t* gas = x.qs + QK_K / 4;  // per 32 values: four 7-bit sign indices + scale
  for (int c = 0; c < 4; ++c, q3 += 16, gas += 8) {
    const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q3)));
    const uint32_t a1 = iq::load_u32(gas), a2 = iq::load_u32(gas + 4);
    b.v[c] = apply_signs(_mm512_i32gather_epi32(idx, grid, 4), iq::ksigns_mask(a1, a2));
    set_scale32(s, 2 * c, a1);
    set_scale32(s, 2 * c + 1, a2);
  }
  b.s = _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(s)));
}

// IQ3_S: value = d (2s + 1) grid, grid bytes 1..15: |s v| <= 31 * 15 = 465.
MOEBOX_TARGET_AMX inline void decode_iq3_s(const block_iq3_s& x, Int8Block& b) {
  const auto* grid = reinterpret_cast<const int*>(iq::iq3s_grid);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  b.d = _cvtsh_ss(x.d);
  alignas(32) int16_t s[16];
  for (int j = 0; j < QK_K / 32; ++j)
    s[2 * j] = s[2 * j + 1] = static_cast<int16_t>(1 + 2 * ((x.scales[j / 2] >> (4 * (j % 2))) & 0xf));
  b.s = _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(s)));
  const uint8_t* qs = x.qs;
  const uint8_t* signs = x.signs;
  for (int c = 0; c < 4; ++c, qs += 16, signs += 8) {
    // bit l of the 16 qh bits of sub-blocks 2c, 2c + 1: the high index bit of group l (of 4 values)
    const __m512i hbit = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(iq::load_u16(x.qh + 2 * c)), lane),
                                          _mm512_set1_epi32(1));
    const __m512i idx = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs))),
                                        _mm512_slli_epi32(hbit, 8));
    uint64_t sign_bits;
    std::memcpy(&sign_bits, signs, 8);
    b.v[c] = apply_signs(_mm512_i32gather_epi32(idx, grid, 4), sign_bits);
  }
}

}  // namespace

void gemm_iq4_xs_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                     int64_t y_stride) {
  gemm_planes_amx<Int8ScaledTiles<block_iq4_xs, decode_iq4_xs>>(n, w, rows, act, n_tokens, y, y_stride);
}

void gemm_iq1_s_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                    int64_t y_stride) {
  gemm_planes_amx<Int8ScaledTiles<block_iq1_s, decode_iq1_s>>(n, w, rows, act, n_tokens, y, y_stride);
}

void gemm_iq1_m_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                    int64_t y_stride) {
  gemm_planes_amx<Int8ScaledTiles<block_iq1_m, decode_iq1_m>>(n, w, rows, act, n_tokens, y, y_stride);
}

void gemm_iq2_xxs_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                      int64_t y_stride) {
  gemm_planes_amx<Int8ScaledTiles<block_iq2_xxs, decode_iq2_xxs>>(n, w, rows, act, n_tokens, y, y_stride);
}

void gemm_iq2_xs_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                     int64_t y_stride) {
  gemm_planes_amx<Int8ScaledTiles<block_iq2_xs, decode_iq2_xs>>(n, w, rows, act, n_tokens, y, y_stride);
}

void gemm_iq2_s_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                    int64_t y_stride) {
  gemm_planes_amx<Int8ScaledTiles<block_iq2_s, decode_iq2_s>>(n, w, rows, act, n_tokens, y, y_stride);
}

void gemm_iq3_xxs_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                      int64_t y_stride) {
  gemm_planes_amx<Int8ScaledTiles<block_iq3_xxs, decode_iq3_xxs>>(n, w, rows, act, n_tokens, y, y_stride);
}

void gemm_iq3_s_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                    int64_t y_stride) {
  gemm_planes_amx<Int8ScaledTiles<block_iq3_s, decode_iq3_s>>(n, w, rows, act, n_tokens, y, y_stride);
}

}  // namespace moebox
