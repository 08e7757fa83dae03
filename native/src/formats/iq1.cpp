// IQ1_S and IQ1_M: 1.5-bit codebook formats (values -1 / 0 / +1 from iq1s_grid,
// shifted by ±1/8 per group). The routed experts of the DeepSeek-R1 UD-IQ1_S /
// UD-IQ1_M quants. Scalar reference + AVX2.
#include "iq_common.h"
#include "moebox/amx.h"

namespace moebox {

using iq::kIq1Delta;

static inline float grid_value(uint64_t entry, int j) { return static_cast<float>(static_cast<int8_t>(entry >> (8 * j))); }

// ---------------------------------------------------------------- IQ1_S

void dequant_iq1_s(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const block_iq1_s*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    const uint8_t* qs = x[i].qs;
    for (int ib = 0; ib < QK_K / 32; ++ib, qs += 4) {
      const uint16_t qh = x[i].qh[ib];
      const float dl = d * static_cast<float>(2 * ((qh >> 12) & 7) + 1);
      const float delta = qh & 0x8000 ? -kIq1Delta : kIq1Delta;
      for (int l = 0; l < 4; ++l) {
        const uint64_t g = iq::iq1s_grid[qs[l] | (((qh >> (3 * l)) & 7) << 8)];
        for (int j = 0; j < 8; ++j) *dst++ = dl * (grid_value(g, j) + delta);
      }
    }
  }
}

float vec_dot_iq1_s_q8_K(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq1_s*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    const uint8_t* qs = x[i].qs;
    int32_t sumi = 0;   // sum of scale * grid * q8
    int32_t sumi1 = 0;  // sum of scale * (±1) * q8: the delta shift, via bsums
    for (int ib = 0; ib < QK_K / 32; ++ib, qs += 4) {
      const uint16_t qh = x[i].qh[ib];
      const int32_t ls = 2 * ((qh >> 12) & 7) + 1;
      int32_t lsum = 0;
      for (int l = 0; l < 4; ++l, q8 += 8) {
        const uint64_t g = iq::iq1s_grid[qs[l] | (((qh >> (3 * l)) & 7) << 8)];
        for (int j = 0; j < 8; ++j) lsum += q8[j] * static_cast<int8_t>(g >> (8 * j));
      }
      sumi += ls * lsum;
      sumi1 += ls * (qh & 0x8000 ? -1 : 1) * (y[i].bsums[2 * ib] + y[i].bsums[2 * ib + 1]);
    }
    sumf += fp16_to_f32(x[i].d) * y[i].d * (static_cast<float>(sumi) + kIq1Delta * static_cast<float>(sumi1));
  }
  return sumf;
}

// The SIMD kernels fold the ±1/8 shift into the weights: u = 8 * (grid ± 1/8) + 9
// is an unsigned byte (0, 2, 8, 10, 16, 18), so one unsigned x signed int8 dot
// (maddubs / dpbusd) gives sum(u * q8) = 8 * sum((grid ± 1/8) * q8) + 9 * sum(q8),
// and sum(q8) per 16 activations is in bsums. All integer, exact.

template <bool kPdep>
MOEBOX_TARGET_AVX2 static float iq1_s_avx2(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq1_s*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  const uint64_t* grid = iq::iq1s_grid_x8p9;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    const uint8_t* qs = x[i].qs;
    uint16_t qh[QK_K / 32];
    std::memcpy(qh, x[i].qh, sizeof(qh));
    __m256i sumi = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib += 2, qs += 8, q8 += 64) {
      const uint32_t h1 = qh[ib], h2 = qh[ib + 1];
      __m256i u1, u2;
      if constexpr (kPdep) {  // four 11-bit indices as 16-bit fields of one word
        const uint64_t p1 = _pdep_u64(iq::load_u32(qs), 0x00ff00ff00ff00ffULL) | _pdep_u64(h1, 0x0700070007000700ULL);
        const uint64_t p2 = _pdep_u64(iq::load_u32(qs + 4), 0x00ff00ff00ff00ffULL) | _pdep_u64(h2, 0x0700070007000700ULL);
        u1 = _mm256_set_epi64x(grid[p1 >> 48], grid[(p1 >> 32) & 0xffff], grid[(p1 >> 16) & 0xffff], grid[p1 & 0xffff]);
        u2 = _mm256_set_epi64x(grid[p2 >> 48], grid[(p2 >> 32) & 0xffff], grid[(p2 >> 16) & 0xffff], grid[p2 & 0xffff]);
      } else {
        u1 = _mm256_set_epi64x(grid[qs[3] | ((h1 >> 1) & 0x700)], grid[qs[2] | ((h1 << 2) & 0x700)],
                               grid[qs[1] | ((h1 << 5) & 0x700)], grid[qs[0] | ((h1 << 8) & 0x700)]);
        u2 = _mm256_set_epi64x(grid[qs[7] | ((h2 >> 1) & 0x700)], grid[qs[6] | ((h2 << 2) & 0x700)],
                               grid[qs[5] | ((h2 << 5) & 0x700)], grid[qs[4] | ((h2 << 8) & 0x700)]);
      }
      u1 = _mm256_add_epi8(u1, _mm256_set1_epi8(h1 & 0x8000 ? -1 : 1));
      u2 = _mm256_add_epi8(u2, _mm256_set1_epi8(h2 & 0x8000 ? -1 : 1));
      const __m256i d1 = _mm256_maddubs_epi16(u1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8)));
      const __m256i d2 = _mm256_maddubs_epi16(u2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32)));
      const int16_t ls1 = static_cast<int16_t>(2 * ((h1 >> 12) & 7) + 1);
      const int16_t ls2 = static_cast<int16_t>(2 * ((h2 >> 12) & 7) + 1);
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_madd_epi16(d1, _mm256_set1_epi16(ls1)),
                                                     _mm256_madd_epi16(d2, _mm256_set1_epi16(ls2))));
    }
    // - 9 * sum over sub-blocks of scale * (bsums[2ib] + bsums[2ib + 1])
    const __m256i ls = _mm256_or_si256(
        _mm256_and_si256(_mm256_srli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qh))), 11),
                         _mm256_set1_epi32(14)),
        _mm256_set1_epi32(1));
    const __m256i b = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].bsums)),
                                        _mm256_set1_epi16(1));
    const __m256i lb = _mm256_mullo_epi32(ls, b);
    sumi = _mm256_sub_epi32(sumi, _mm256_add_epi32(_mm256_slli_epi32(lb, 3), lb));
    const float d = iq::fp16_to_f32_f16c(x[i].d) * y[i].d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return 0.125f * iq::hsum_f32x8(acc);
}

float vec_dot_iq1_s_q8_K_avx2(int64_t n, const void* w_row, const void* act_row) {
  return iq::fast_pdep() ? iq1_s_avx2<true>(n, w_row, act_row) : iq1_s_avx2<false>(n, w_row, act_row);
}

// ---------------------------------------------------------------- IQ1_M

// 3-bit scale of the k-th group of 16 weights, as the odd factor 2s + 1.
static inline int32_t iq1_m_scale(const block_iq1_m& b, int k) {
  const uint16_t word = iq::load_u16(b.scales + 2 * (k / 4));
  return 2 * ((word >> (3 * (k % 4))) & 7) + 1;
}

// Grid index and delta sign (true = -1/8) of the l-th group of 8 weights (0..31).
static inline int iq1_m_index(const block_iq1_m& b, int g) {
  const uint8_t h = b.qh[g / 2];
  return b.qs[g] | ((g % 2 ? (h << 4) : (h << 8)) & 0x700);
}
static inline bool iq1_m_negative_delta(const block_iq1_m& b, int g) { return b.qh[g / 2] & (g % 2 ? 0x80 : 0x08); }

void dequant_iq1_m(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const block_iq1_m*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(iq::iq1_m_scale_bits(x[i]));
    for (int g = 0; g < QK_K / 8; ++g) {
      const float dl = d * static_cast<float>(iq1_m_scale(x[i], g / 2));
      const float delta = iq1_m_negative_delta(x[i], g) ? -kIq1Delta : kIq1Delta;
      const uint64_t e = iq::iq1s_grid[iq1_m_index(x[i], g)];
      for (int j = 0; j < 8; ++j) *dst++ = dl * (grid_value(e, j) + delta);
    }
  }
}

float vec_dot_iq1_m_q8_K(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq1_m*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    int32_t sumi1 = 0;  // sum of scale * grid * q8
    int32_t sumi2 = 0;  // sum of scale * (±1) * q8 (the delta shift)
    for (int g = 0; g < QK_K / 8; ++g, q8 += 8) {
      const uint64_t e = iq::iq1s_grid[iq1_m_index(x[i], g)];
      int32_t lsum1 = 0, lsum2 = 0;
      for (int j = 0; j < 8; ++j) {
        lsum1 += q8[j] * static_cast<int8_t>(e >> (8 * j));
        lsum2 += q8[j];
      }
      const int32_t ls = iq1_m_scale(x[i], g / 2);
      sumi1 += ls * lsum1;
      sumi2 += ls * (iq1_m_negative_delta(x[i], g) ? -lsum2 : lsum2);
    }
    sumf += fp16_to_f32(iq::iq1_m_scale_bits(x[i])) * y[i].d *
            (static_cast<float>(sumi1) + kIq1Delta * static_cast<float>(sumi2));
  }
  return sumf;
}

// Four ±1 int8 patterns per 32 weights: bit j of the index set = group j has -1/8.
struct Iq1DeltaPatterns {
  alignas(32) uint64_t v[16][4];
  constexpr Iq1DeltaPatterns() : v() {
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 4; ++j) v[i][j] = (i >> j) & 1 ? ~0ULL : 0x0101010101010101ULL;
  }
};
static constexpr Iq1DeltaPatterns kIq1Deltas;

// Delta-sign bits of the four groups of 8 weights covered by qh bytes h0, h1.
static inline int iq1_m_delta_bits(uint32_t h0, uint32_t h1) {
  return ((h0 >> 3) & 1) | ((h0 >> 6) & 2) | ((h1 >> 1) & 4) | ((h1 >> 4) & 8);
}

template <bool kPdep>
MOEBOX_TARGET_AVX2 static float iq1_m_avx2(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq1_m*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  const uint64_t* grid = iq::iq1s_grid_x8p9;
  const auto* deltas = reinterpret_cast<const __m256i*>(kIq1Deltas.v);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    const uint8_t* qs = x[i].qs;
    const uint8_t* qh = x[i].qh;
    uint64_t sc;
    std::memcpy(&sc, x[i].scales, 8);
    alignas(32) int16_t ls[16];  // one odd scale per 16 weights
    if constexpr (kPdep) {  // the four 3-bit scales of each word into four 16-bit fields
      uint64_t f[4];
      for (int w = 0; w < 4; ++w) f[w] = (_pdep_u64(sc >> (16 * w), 0x0007000700070007ULL) << 1) | 0x0001000100010001ULL;
      std::memcpy(ls, f, sizeof(ls));
    } else {
      for (int k = 0; k < 16; ++k) ls[k] = static_cast<int16_t>(2 * ((sc >> (3 * (k % 4) + 16 * (k / 4))) & 7) + 1);
    }
    __m256i sumi = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib += 2, qs += 8, qh += 4, q8 += 64) {
      const uint32_t h0 = qh[0], h1 = qh[1], h2 = qh[2], h3 = qh[3];
      __m256i u1, u2;
      if constexpr (kPdep) {  // four 11-bit indices as 16-bit fields of one word
        const uint64_t p1 = _pdep_u64(iq::load_u32(qs), 0x00ff00ff00ff00ffULL) |
                            _pdep_u64((h0 | (h1 << 8)) & 0x7777, 0x0f000f000f000f00ULL);
        const uint64_t p2 = _pdep_u64(iq::load_u32(qs + 4), 0x00ff00ff00ff00ffULL) |
                            _pdep_u64((h2 | (h3 << 8)) & 0x7777, 0x0f000f000f000f00ULL);
        u1 = _mm256_set_epi64x(grid[p1 >> 48], grid[(p1 >> 32) & 0xffff], grid[(p1 >> 16) & 0xffff], grid[p1 & 0xffff]);
        u2 = _mm256_set_epi64x(grid[p2 >> 48], grid[(p2 >> 32) & 0xffff], grid[(p2 >> 16) & 0xffff], grid[p2 & 0xffff]);
      } else {
        u1 = _mm256_set_epi64x(grid[qs[3] | ((h1 << 4) & 0x700)], grid[qs[2] | ((h1 << 8) & 0x700)],
                               grid[qs[1] | ((h0 << 4) & 0x700)], grid[qs[0] | ((h0 << 8) & 0x700)]);
        u2 = _mm256_set_epi64x(grid[qs[7] | ((h3 << 4) & 0x700)], grid[qs[6] | ((h3 << 8) & 0x700)],
                               grid[qs[5] | ((h2 << 4) & 0x700)], grid[qs[4] | ((h2 << 8) & 0x700)]);
      }
      u1 = _mm256_add_epi8(u1, _mm256_load_si256(deltas + iq1_m_delta_bits(h0, h1)));
      u2 = _mm256_add_epi8(u2, _mm256_load_si256(deltas + iq1_m_delta_bits(h2, h3)));
      const __m256i d1 = _mm256_maddubs_epi16(u1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8)));
      const __m256i d2 = _mm256_maddubs_epi16(u2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32)));
      // Low 128-bit lane of each product: the first 16 weights (scale 2ib or 2ib + 2).
      const int k = 2 * ib;
      const __m256i sc1 = _mm256_blend_epi32(_mm256_set1_epi16(ls[k]), _mm256_set1_epi16(ls[k + 1]), 0xf0);
      const __m256i sc2 = _mm256_blend_epi32(_mm256_set1_epi16(ls[k + 2]), _mm256_set1_epi16(ls[k + 3]), 0xf0);
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_madd_epi16(d1, sc1), _mm256_madd_epi16(d2, sc2)));
    }
    // - 9 * sum over groups of 16 of scale * bsum
    const __m256i lb = _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(ls)),
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].bsums)));
    sumi = _mm256_sub_epi32(sumi, _mm256_add_epi32(_mm256_slli_epi32(lb, 3), lb));
    const float d = iq::fp16_to_f32_f16c(iq::iq1_m_scale_bits(x[i])) * y[i].d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return 0.125f * iq::hsum_f32x8(acc);
}

float vec_dot_iq1_m_q8_K_avx2(int64_t n, const void* w_row, const void* act_row) {
  return iq::fast_pdep() ? iq1_m_avx2<true>(n, w_row, act_row) : iq1_m_avx2<false>(n, w_row, act_row);
}

// ---------------------------------------------------------------- AVX-512 VNNI
//
// Same folded shift as AVX2; maddubs gives int16 pair sums and dpwssd applies the
// scales while accumulating. The 8-value grid entries come by one gather per 64
// weights (iq::lookup8).

MOEBOX_TARGET_AVX512 float vec_dot_iq1_s_q8_K_avx512(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq1_s*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  const uint64_t* grid = iq::iq1s_grid_x8p9;
  // Lane g (group of 8 weights, 0..31) reads qh word g / 4, shifted by 3 * (g % 4).
  alignas(64) static const uint16_t kWord[32] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                                 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7};
  alignas(64) static const uint16_t kShift[32] = {0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9,
                                                  0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9};
  static const uint8_t kHalves[4] = {0x00, 0x0f, 0xf0, 0xff};  // 2 sub-block bits -> 8 qword lanes
  // int16 lane L of the k-th 64 weights holds weights 64k + 2L, +1: sub-block 2k + L / 16.
  alignas(64) static const uint16_t kScaleOfPair[4][32] = {
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
      {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5},
      {6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}};
  alignas(32) static const uint16_t kScaleOfBsum[16] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7};
  const __m512i word_idx = _mm512_load_si512(kWord);
  const __m512i shifts = _mm512_load_si512(kShift);
  const __m512i plus1 = _mm512_set1_epi8(1), minus1 = _mm512_set1_epi8(-1);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].qh));
    const __m512i qs16 = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs)));
    const __m512i hi = _mm512_and_si512(_mm512_srlv_epi16(_mm512_permutexvar_epi16(word_idx, _mm512_castsi128_si512(qh)), shifts),
                                        _mm512_set1_epi16(7));
    const __m512i idx = _mm512_or_si512(qs16, _mm512_slli_epi16(hi, 8));
    const unsigned negative = _mm_movepi16_mask(qh);  // bit ib: delta of sub-block ib is -1/8
    const __m128i ls = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)), _mm_set1_epi16(1));
    const __m512i ls512 = _mm512_castsi128_si512(ls);  // 8 odd scales (int16), one per 32 weights
    const __m256i ids[4] = {_mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, 0)),
                            _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, 1)),
                            _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, 2)),
                            _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, 3))};
    __m512i sumi = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) {
      const __m512i g = iq::lookup8(grid, ids[k]);
      const __m512i u = _mm512_add_epi8(g, _mm512_mask_blend_epi64(kHalves[(negative >> (2 * k)) & 3], plus1, minus1));
      const __m512i q = _mm512_loadu_si512(y[i].qs + 64 * k);
      // int16 pair sums (< 2 * 18 * 127), times the sub-block scale, accumulated: maddubs + dpwssd.
      const __m512i sc = _mm512_permutexvar_epi16(_mm512_load_si512(kScaleOfPair[k]), ls512);
      sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(u, q), sc);
    }
    // - 9 * sum over sub-blocks of scale * (bsums[2ib] + bsums[2ib + 1])
    const __m256i lb = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].bsums)),
                                         _mm256_permutexvar_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(kScaleOfBsum)),
                                                                  _mm256_castsi128_si256(ls)));
    sumi = _mm512_sub_epi32(sumi, _mm512_castsi256_si512(_mm256_add_epi32(_mm256_slli_epi32(lb, 3), lb)));
    acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(x[i].d) * y[i].d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return 0.125f * _mm512_reduce_add_ps(acc);
}

MOEBOX_TARGET_AVX512 float vec_dot_iq1_m_q8_K_avx512(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq1_m*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  const uint64_t* grid = iq::iq1s_grid_x8p9;
  // Lane g (group of 8 weights) reads qh byte g / 2, shifted by 4 * (g % 2).
  alignas(64) static const uint16_t kByte[32] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7,
                                                 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15};
  alignas(64) static const uint16_t kShift[32] = {0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4,
                                                  0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4};
  const __m512i byte_idx = _mm512_load_si512(kByte);
  const __m512i shifts = _mm512_load_si512(kShift);
  // Scale m (per 16 weights, 0..15) is bits 3 * (m % 4) of scale word m / 4.
  const __m256i scale_word = _mm256_setr_epi16(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const __m256i scale_shift = _mm256_setr_epi16(0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9, 0, 3, 6, 9);
  const __m512i plus1 = _mm512_set1_epi8(1), minus1 = _mm512_set1_epi8(-1);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const __m512i qs16 = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs)));
    const __m512i qh16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].qh))));
    const __m512i nib = _mm512_srlv_epi16(_mm512_permutexvar_epi16(byte_idx, qh16), shifts);
    const __m512i idx = _mm512_or_si512(qs16, _mm512_slli_epi16(_mm512_and_si512(nib, _mm512_set1_epi16(7)), 8));
    const uint32_t negative = _mm512_test_epi16_mask(nib, _mm512_set1_epi16(8));  // bit g: delta of group g is -1/8
    uint64_t sc;
    std::memcpy(&sc, x[i].scales, 8);
    const __m256i words = _mm256_permutexvar_epi16(scale_word, _mm256_castsi128_si256(_mm_cvtsi64_si128(static_cast<long long>(sc))));
    const __m256i ls = _mm256_or_si256(
        _mm256_slli_epi16(_mm256_and_si256(_mm256_srlv_epi16(words, scale_shift), _mm256_set1_epi16(7)), 1),
        _mm256_set1_epi16(1));  // 16 odd scales (int16), one per 16 weights
    const __m512i ls512 = _mm512_castsi256_si512(ls);
    const __m256i ids[4] = {_mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, 0)),
                            _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, 1)),
                            _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, 2)),
                            _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(idx, 3))};
    __m512i sumi = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) {
      const __m512i g = iq::lookup8(grid, ids[k]);
      const __m512i u = _mm512_add_epi8(g, _mm512_mask_blend_epi64(static_cast<__mmask8>(negative >> (8 * k)), plus1, minus1));
      const __m512i q = _mm512_loadu_si512(y[i].qs + 64 * k);
      const __m512i scale = _mm512_permutexvar_epi16(_mm512_load_si512(iq::kScale16OfPair[k]), ls512);
      sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(u, q), scale);
    }
    // - 9 * sum over groups of 16 of scale * bsum
    const __m256i lb = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].bsums)), ls);
    sumi = _mm512_sub_epi32(sumi, _mm512_castsi256_si512(_mm256_add_epi32(_mm256_slli_epi32(lb, 3), lb)));
    acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(iq::iq1_m_scale_bits(x[i])) * y[i].d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return 0.125f * _mm512_reduce_add_ps(acc);
}

extern const FormatOps kFormatIQ1_S = {
    "IQ1_S", GgmlType::IQ1_S, QK_K, sizeof(block_iq1_s), GgmlType::Q8_K, dequant_iq1_s,
    {vec_dot_iq1_s_q8_K, vec_dot_iq1_s_q8_K_avx2, vec_dot_iq1_s_q8_K_avx512, nullptr},
    {},
    gemm_iq1_s_amx};
extern const FormatOps kFormatIQ1_M = {
    "IQ1_M", GgmlType::IQ1_M, QK_K, sizeof(block_iq1_m), GgmlType::Q8_K, dequant_iq1_m,
    {vec_dot_iq1_m_q8_K, vec_dot_iq1_m_q8_K_avx2, vec_dot_iq1_m_q8_K_avx512, nullptr},
    {},
    gemm_iq1_m_amx};

}  // namespace moebox
