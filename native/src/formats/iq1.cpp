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

// The SIMD kernels look the grid up as unsigned bytes u = 8 grid + 9 (1, 9, 17), so one
// unsigned x signed int8 dot (maddubs) gives sum(u * q8) = 8 * sum(grid * q8) + 9 * sum(q8).
// The ±1/8 shift is per 32 weights, so it joins the 9 in one correction from bsums:
// 8 * sum((grid + delta) * q8) = sum(u * q8) - (9 - 8 delta) * sum(q8), 9 - 8 delta = 8 or 10.
// All integer, exact.
//
// The 32 grid lookups of a block are the cost (IQ1_S reads 50 bytes per 256 weights). They
// are scalar loads: a dword gather is no faster on Zen 3 (~10 cycles for 8 lanes) and
// measured slower than loads on the Xeon. The indices of the next block are computed in
// vector and stored while the current block runs: reading them back right after the store
// stalls on store forwarding. Four 8-byte entries are joined by broadcast + blend (no
// port-5 shuffle on Intel, cheap on Zen 3).

// Grid indices of the 32 groups of 8 weights of a block: qs[e] | high bits << 8, the high
// bits taken from the 16 qh bytes per 16-bit lane: `pick` (one shuffle mask per 16 groups)
// moves the byte(s) holding them into the lane, `shift` (a power of two per lane) moves
// them to bit 8 on, `bits` keeps them.
MOEBOX_TARGET_AVX2 static inline void iq1_indices(const uint8_t* qs, const void* qh16, const __m256i (&pick)[2], __m256i shift,
                                                  __m256i bits, uint16_t* out) {
  const __m256i qh = _mm256_broadcastsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(qh16)));
  for (int h = 0; h < 2; ++h) {
    const __m256i hi = _mm256_and_si256(_mm256_mullo_epi16(_mm256_shuffle_epi8(qh, pick[h]), shift), bits);
    const __m256i lo = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16 * h)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(out + 16 * h), _mm256_or_si256(hi, lo));
  }
}

// IQ1_S: 11-bit index qs[e] | ((qh[e / 4] >> 3 (e % 4)) & 7) << 8. Each lane takes its qh
// word (for e % 4 == 3 its high byte only, the bits then sit at 1..3).
MOEBOX_TARGET_AVX2 static inline void iq1_s_indices(const block_iq1_s& b, uint16_t* out) {
  const __m256i pick[2] = {_mm256_setr_epi8(0, 1, 0, 1, 0, 1, 1, -1, 2, 3, 2, 3, 2, 3, 3, -1,  //
                                            4, 5, 4, 5, 4, 5, 5, -1, 6, 7, 6, 7, 6, 7, 7, -1),
                           _mm256_setr_epi8(8, 9, 8, 9, 8, 9, 9, -1, 10, 11, 10, 11, 10, 11, 11, -1,  //
                                            12, 13, 12, 13, 12, 13, 13, -1, 14, 15, 14, 15, 14, 15, 15, -1)};
  const __m256i shift = _mm256_setr_epi16(256, 32, 4, 128, 256, 32, 4, 128, 256, 32, 4, 128, 256, 32, 4, 128);
  iq1_indices(b.qs, b.qh, pick, shift, _mm256_set1_epi16(0x700), out);
}

// Grid entries of 4 groups (32 weights) from four packed 16-bit indices.
MOEBOX_TARGET_AVX2 static inline __m256i iq1_lookup4(const uint64_t* grid, const uint16_t* idx) {
  uint64_t p;
  std::memcpy(&p, idx, 8);
  const __m256i a = _mm256_blend_epi32(_mm256_castsi128_si256(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(grid + (p & 0xffff)))),
                                       _mm256_set1_epi64x(static_cast<long long>(grid[(p >> 16) & 0xffff])), 0x0c);
  const __m256i b = _mm256_blend_epi32(_mm256_set1_epi64x(static_cast<long long>(grid[(p >> 32) & 0xffff])),
                                       _mm256_set1_epi64x(static_cast<long long>(grid[p >> 48])), 0xc0);
  return _mm256_blend_epi32(a, b, 0xf0);
}

// Per sub-block: (2s + 1), and (2s + 1) (9 - 8 delta) twice per int32 lane, to be dotted
// with the 16 bsums (int16 pairs) in one madd.
struct Iq1sScales {
  __m128i odd;         // 8 x int16
  __m256i correction;  // 8 x (int16, int16)
};

MOEBOX_TARGET_AVX2 static inline Iq1sScales iq1_s_scales(const block_iq1_s& b) {
  const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qh));
  const __m128i odd = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(14)), _mm_set1_epi16(1));
  const __m128i c = _mm_sub_epi16(_mm_set1_epi16(9), _mm_or_si128(_mm_srai_epi16(qh, 15), _mm_set1_epi16(1)));
  const __m256i oc = _mm256_cvtepu16_epi32(_mm_mullo_epi16(odd, c));
  return {odd, _mm256_or_si256(oc, _mm256_slli_epi32(oc, 16))};
}

// One weight row against NT activation rows: the lookups, indices and scales are shared
// by the tokens (prefill); NT = 1 is the plain dot product, and each token's sums are
// the same operations in the same order for every NT (bitwise equal results).
template <int NT>
MOEBOX_TARGET_AVX2 void iq1_s_avx2(int64_t n, const void* w_row, const void* const* act_rows, float* out) {
  const auto* x = static_cast<const block_iq1_s*>(w_row);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(act_rows[t]);
  const uint64_t* grid = iq::iq1s_grid_x8p9;
  const int64_t nb = n / QK_K;
  alignas(32) uint16_t idx[2][QK_K / 8];
  if (nb > 0) iq1_s_indices(x[0], idx[0]);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const uint16_t* id = idx[i & 1];
    if (i + 1 < nb) iq1_s_indices(x[i + 1], idx[(i + 1) & 1]);
    const Iq1sScales sc = iq1_s_scales(x[i]);
    const __m256i odd = _mm256_broadcastsi128_si256(sc.odd);
    __m256i sumi[NT];
    for (int t = 0; t < NT; ++t) sumi[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int ib = 0; ib < QK_K / 32; ++ib, id += 4) {
      const __m256i g = iq1_lookup4(grid, id);
      const __m256i s = _mm256_shuffle_epi8(odd, _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * ib)));
      for (int t = 0; t < NT; ++t) {
        const __m256i p = _mm256_maddubs_epi16(g, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].qs + 32 * ib)));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, s));
      }
    }
    const float dx = iq::fp16_to_f32_f16c(x[i].d);
    for (int t = 0; t < NT; ++t) {
      const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].bsums)), sc.correction);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[t][i].d), _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], corr)), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = 0.125f * iq::hsum_f32x8(acc[t]);
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

// The AVX2 kernel looks up u = 8 grid + 9 ± 1 (the shift of each 8 weights folded in) from
// iq1m_grid_x8p9_delta by a 12-bit index: qs[e] | (qh nibble of group e) << 8, the nibble's
// top bit being the shift's sign. sum(u * q8) = 8 * sum((grid + delta) * q8) + 9 * sum(q8),
// and the scales are per 16 weights, as the bsums. Lookups as for IQ1_S.
MOEBOX_TARGET_AVX2 static inline void iq1_m_indices(const block_iq1_m& b, uint16_t* out) {
  // group e: qh byte e / 2 into the low byte; its low nibble (e even) or high nibble (odd) to bits 8..11
  const __m256i pick[2] = {_mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1,  //
                                            4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1),
                           _mm256_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10, -1, 11, -1, 11, -1,  //
                                            12, -1, 12, -1, 13, -1, 13, -1, 14, -1, 14, -1, 15, -1, 15, -1)};
  const __m256i shift = _mm256_setr_epi16(256, 16, 256, 16, 256, 16, 256, 16, 256, 16, 256, 16, 256, 16, 256, 16);
  iq1_indices(b.qs, b.qh, pick, shift, _mm256_set1_epi16(0xf00), out);
}

// The 16 odd scales 2s + 1 (int16, one per 16 weights): scale k is bits 3 (k % 4) of word
// k / 4, moved to bits 12..14 by a multiply.
MOEBOX_TARGET_AVX2 static inline __m256i iq1_m_scales(const block_iq1_m& b) {
  uint64_t sc;
  std::memcpy(&sc, b.scales, 8);
  const __m256i words = _mm256_shuffle_epi8(_mm256_set1_epi64x(static_cast<long long>(sc)),
                                            _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3,  //
                                                             4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7));
  const __m256i shift = _mm256_setr_epi16(4096, 512, 64, 8, 4096, 512, 64, 8, 4096, 512, 64, 8, 4096, 512, 64, 8);
  const __m256i s = _mm256_and_si256(_mm256_srli_epi16(_mm256_mullo_epi16(words, shift), 12), _mm256_set1_epi16(7));
  return _mm256_or_si256(_mm256_add_epi16(s, s), _mm256_set1_epi16(1));
}

template <int NT>
MOEBOX_TARGET_AVX2 void iq1_m_avx2(int64_t n, const void* w_row, const void* const* act_rows, float* out) {
  const auto* x = static_cast<const block_iq1_m*>(w_row);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(act_rows[t]);
  const uint64_t* grid = iq::iq1m_grid_x8p9_delta;
  const int64_t nb = n / QK_K;
  alignas(32) uint16_t idx[2][QK_K / 8];
  if (nb > 0) iq1_m_indices(x[0], idx[0]);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const uint16_t* id = idx[i & 1];
    if (i + 1 < nb) iq1_m_indices(x[i + 1], idx[(i + 1) & 1]);
    const __m256i ls = iq1_m_scales(x[i]);
    // scales 0..7 and 8..15 in both 128-bit halves: sub-block ib takes 2 ib (low half), 2 ib + 1
    const __m256i ls_lo = _mm256_permute4x64_epi64(ls, 0x44), ls_hi = _mm256_permute4x64_epi64(ls, 0xee);
    __m256i sumi[NT];
    for (int t = 0; t < NT; ++t) sumi[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int ib = 0; ib < QK_K / 32; ++ib, id += 4) {
      const __m256i g = iq1_lookup4(grid, id);
      const int b0 = 4 * (ib % 4);  // byte of scale 2 ib within its half
      const __m256i pick = _mm256_setr_epi8(b0, b0 + 1, b0, b0 + 1, b0, b0 + 1, b0, b0 + 1, b0, b0 + 1, b0, b0 + 1, b0, b0 + 1,
                                            b0, b0 + 1, b0 + 2, b0 + 3, b0 + 2, b0 + 3, b0 + 2, b0 + 3, b0 + 2, b0 + 3, b0 + 2,
                                            b0 + 3, b0 + 2, b0 + 3, b0 + 2, b0 + 3, b0 + 2, b0 + 3);
      const __m256i s = _mm256_shuffle_epi8(ib < 4 ? ls_lo : ls_hi, pick);
      for (int t = 0; t < NT; ++t) {
        const __m256i p = _mm256_maddubs_epi16(g, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].qs + 32 * ib)));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, s));
      }
    }
    const float dx = iq::fp16_to_f32_f16c(iq::iq1_m_scale_bits(x[i]));
    for (int t = 0; t < NT; ++t) {
      // - 9 * sum over groups of 16 of scale * bsum
      const __m256i lb = _mm256_madd_epi16(ls, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].bsums)));
      const __m256i sum = _mm256_sub_epi32(sumi[t], _mm256_add_epi32(_mm256_slli_epi32(lb, 3), lb));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[t][i].d), _mm256_cvtepi32_ps(sum), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = 0.125f * iq::hsum_f32x8(acc[t]);
}

// ---------------------------------------------------------------- AVX-512 VNNI
//
// The AVX2 lookups, 8 grid entries per zmm; maddubs gives int16 pair sums and dpwssd
// applies the scales while accumulating.

template <int NT>
MOEBOX_TARGET_AVX512 void iq1_s_avx512(int64_t n, const void* w_row, const void* const* act_rows, float* out) {
  const auto* x = static_cast<const block_iq1_s*>(w_row);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(act_rows[t]);
  const uint64_t* grid = iq::iq1s_grid_x8p9;
  const int64_t nb = n / QK_K;
  // int16 lane L of the k-th 64 weights holds weights 64k + 2L, +1: sub-block 2k + L / 16.
  alignas(64) static const uint16_t kScaleOfPair[4][32] = {
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
      {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
      {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5},
      {6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}};
  alignas(32) uint16_t idx[2][QK_K / 8];
  if (nb > 0) iq1_s_indices(x[0], idx[0]);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const uint16_t* id = idx[i & 1];
    if (i + 1 < nb) iq1_s_indices(x[i + 1], idx[(i + 1) & 1]);
    const Iq1sScales sc = iq1_s_scales(x[i]);
    const __m512i odd = _mm512_castsi128_si512(sc.odd);
    __m512i sumi[NT];
    for (int t = 0; t < NT; ++t) sumi[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k, id += 8) {
      const __m512i g = _mm512_inserti64x4(_mm512_castsi256_si512(iq1_lookup4(grid, id)), iq1_lookup4(grid, id + 4), 1);
      const __m512i s = _mm512_permutexvar_epi16(_mm512_load_si512(kScaleOfPair[k]), odd);
      // int16 pair sums (< 2 * 17 * 127), times the sub-block scale, accumulated: maddubs + dpwssd.
      for (int t = 0; t < NT; ++t)
        sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_maddubs_epi16(g, _mm512_loadu_si512(y[t][i].qs + 64 * k)), s);
    }
    const float dx = _cvtsh_ss(x[i].d);
    for (int t = 0; t < NT; ++t) {
      const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].bsums)), sc.correction);
      const __m512i sum = _mm512_sub_epi32(sumi[t], _mm512_castsi256_si512(corr));
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(dx * y[t][i].d), _mm512_cvtepi32_ps(sum), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = 0.125f * _mm512_reduce_add_ps(acc[t]);
}

template <int NT>
MOEBOX_TARGET_AVX512 void iq1_m_avx512(int64_t n, const void* w_row, const void* const* act_rows, float* out) {
  const auto* x = static_cast<const block_iq1_m*>(w_row);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(act_rows[t]);
  const uint64_t* grid = iq::iq1m_grid_x8p9_delta;
  const int64_t nb = n / QK_K;
  alignas(32) uint16_t idx[2][QK_K / 8];
  if (nb > 0) iq1_m_indices(x[0], idx[0]);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const uint16_t* id = idx[i & 1];
    if (i + 1 < nb) iq1_m_indices(x[i + 1], idx[(i + 1) & 1]);
    const __m256i ls = iq1_m_scales(x[i]);
    const __m512i ls512 = _mm512_castsi256_si512(ls);
    __m512i sumi[NT];
    for (int t = 0; t < NT; ++t) sumi[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k, id += 8) {
      const __m512i g = _mm512_inserti64x4(_mm512_castsi256_si512(iq1_lookup4(grid, id)), iq1_lookup4(grid, id + 4), 1);
      const __m512i scale = _mm512_permutexvar_epi16(_mm512_load_si512(iq::kScale16OfPair[k]), ls512);
      for (int t = 0; t < NT; ++t)
        sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_maddubs_epi16(g, _mm512_loadu_si512(y[t][i].qs + 64 * k)), scale);
    }
    const float dx = _cvtsh_ss(iq::iq1_m_scale_bits(x[i]));
    for (int t = 0; t < NT; ++t) {
      // - 9 * sum over groups of 16 of scale * bsum
      const __m256i lb = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[t][i].bsums)), ls);
      const __m512i sum = _mm512_sub_epi32(sumi[t], _mm512_castsi256_si512(_mm256_add_epi32(_mm256_slli_epi32(lb, 3), lb)));
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(dx * y[t][i].d), _mm512_cvtepi32_ps(sum), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = 0.125f * _mm512_reduce_add_ps(acc[t]);
}

float vec_dot_iq1_s_q8_K_avx2(int64_t n, const void* w, const void* a) { return single_token<iq1_s_avx2<1>>(n, w, a); }
float vec_dot_iq1_m_q8_K_avx2(int64_t n, const void* w, const void* a) { return single_token<iq1_m_avx2<1>>(n, w, a); }
float vec_dot_iq1_s_q8_K_avx512(int64_t n, const void* w, const void* a) { return single_token<iq1_s_avx512<1>>(n, w, a); }
float vec_dot_iq1_m_q8_K_avx512(int64_t n, const void* w, const void* a) { return single_token<iq1_m_avx512<1>>(n, w, a); }

extern const FormatOps kFormatIQ1_S = {
    "IQ1_S", GgmlType::IQ1_S, QK_K, sizeof(block_iq1_s), GgmlType::Q8_K, dequant_iq1_s,
    {vec_dot_iq1_s_q8_K, vec_dot_iq1_s_q8_K_avx2, vec_dot_iq1_s_q8_K_avx512, nullptr},
    {nullptr, iq1_s_avx2<kMultiTokens>, iq1_s_avx512<kMultiTokens>, nullptr},
    gemm_iq1_s_amx};
extern const FormatOps kFormatIQ1_M = {
    "IQ1_M", GgmlType::IQ1_M, QK_K, sizeof(block_iq1_m), GgmlType::Q8_K, dequant_iq1_m,
    {vec_dot_iq1_m_q8_K, vec_dot_iq1_m_q8_K_avx2, vec_dot_iq1_m_q8_K_avx512, nullptr},
    {nullptr, iq1_m_avx2<kMultiTokens>, iq1_m_avx512<kMultiTokens>, nullptr},
    gemm_iq1_m_amx};

}  // namespace moebox
