// IQ4_NL and IQ4_XS: 4-bit indices into the non-linear table kvalues_iq4nl.
// IQ4_NL has 32-weight blocks and dots with block_q8_0; IQ4_XS packs 256 weights
// with 6-bit sub-block scales and dots with block_q8_K. Scalar reference + AVX2.
#include "iq_common.h"
#include "moebox/amx.h"

namespace moebox {

using iq::kvalues_iq4nl;

// ---------------------------------------------------------------- IQ4_NL

void dequant_iq4_nl(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const block_iq4_nl*>(src);
  for (int64_t i = 0; i < n / QK4_NL; ++i, dst += QK4_NL) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < QK4_NL / 2; ++j) {
      dst[j] = d * kvalues_iq4nl[x[i].qs[j] & 0xf];
      dst[j + QK4_NL / 2] = d * kvalues_iq4nl[x[i].qs[j] >> 4];
    }
  }
}

float vec_dot_iq4_nl_q8_0(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq4_nl*>(w_row);
  const auto* y = static_cast<const block_q8_0*>(act_row);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / QK4_NL; ++i) {
    int32_t sumi = 0;
    for (int j = 0; j < QK4_NL / 2; ++j) {
      sumi += y[i].qs[j] * kvalues_iq4nl[x[i].qs[j] & 0xf];
      sumi += y[i].qs[j + QK4_NL / 2] * kvalues_iq4nl[x[i].qs[j] >> 4];
    }
    sumf += fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d) * static_cast<float>(sumi);
  }
  return sumf;
}

// 16 bytes of packed nibbles -> 32 int8 table values: low nibbles in the low
// 128-bit lane (weights 0..15), high nibbles in the high lane (16..31).
MOEBOX_TARGET_AVX2 static inline __m256i iq4_values(const uint8_t* q) {
  const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_iq4nl));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  return _mm256_set_m128i(_mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(bits, 4), m4)),
                          _mm_shuffle_epi8(table, _mm_and_si128(bits, m4)));
}

MOEBOX_TARGET_AVX2 float vec_dot_iq4_nl_q8_0_avx2(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq4_nl*>(w_row);
  const auto* y = static_cast<const block_q8_0*>(act_row);
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps();
  const int64_t nb = n / QK4_NL;
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    const __m256i p1 = _mm256_madd_epi16(
        iq::mul_add_i8(iq4_values(x[i].qs), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs))), ones16);
    const __m256i p2 = _mm256_madd_epi16(
        iq::mul_add_i8(iq4_values(x[i + 1].qs), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i + 1].qs))),
        ones16);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(iq::fp16_to_f32_f16c(x[i].d) * iq::fp16_to_f32_f16c(y[i].d)),
                           _mm256_cvtepi32_ps(p1), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_set1_ps(iq::fp16_to_f32_f16c(x[i + 1].d) * iq::fp16_to_f32_f16c(y[i + 1].d)),
                           _mm256_cvtepi32_ps(p2), acc2);
  }
  for (; i < nb; ++i) {
    const __m256i p = _mm256_madd_epi16(
        iq::mul_add_i8(iq4_values(x[i].qs), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs))), ones16);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(iq::fp16_to_f32_f16c(x[i].d) * iq::fp16_to_f32_f16c(y[i].d)),
                           _mm256_cvtepi32_ps(p), acc1);
  }
  return iq::hsum_f32x8(_mm256_add_ps(acc1, acc2));
}

// ---------------------------------------------------------------- IQ4_XS

// 6-bit scale of sub-block ib (0..7), bias removed: -32..31.
static inline int32_t iq4_xs_scale(const block_iq4_xs& b, int ib) {
  const int lo = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
  const int hi = (b.scales_h >> (2 * ib)) & 3;
  return (lo | (hi << 4)) - 32;
}

void dequant_iq4_xs(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const block_iq4_xs*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int ib = 0; ib < QK_K / 32; ++ib, dst += 32) {
      const float dl = d * static_cast<float>(iq4_xs_scale(x[i], ib));
      const uint8_t* qs = x[i].qs + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        dst[j] = dl * kvalues_iq4nl[qs[j] & 0xf];
        dst[j + 16] = dl * kvalues_iq4nl[qs[j] >> 4];
      }
    }
  }
}

float vec_dot_iq4_xs_q8_K(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq4_xs*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    int32_t bsum = 0;
    for (int ib = 0; ib < QK_K / 32; ++ib, q8 += 32) {
      const uint8_t* qs = x[i].qs + 16 * ib;
      int32_t sumi = 0;
      for (int j = 0; j < 16; ++j) sumi += q8[j] * kvalues_iq4nl[qs[j] & 0xf] + q8[j + 16] * kvalues_iq4nl[qs[j] >> 4];
      bsum += sumi * iq4_xs_scale(x[i], ib);
    }
    sumf += fp16_to_f32(x[i].d) * y[i].d * static_cast<float>(bsum);
  }
  return sumf;
}

// One weight row against NT activation rows (NT = 1: the dot product): table values and
// scales shared by the tokens.
template <int NT>
MOEBOX_TARGET_AVX2 void iq4_xs_avx2(int64_t n, const void* w_row, const void* const* act_rows, float* out) {
  const auto* x = static_cast<const block_iq4_xs*>(w_row);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(act_rows[t]);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const uint8_t* qs = x[i].qs;
    __m256i sumi1[NT], sumi2[NT];
    for (int t = 0; t < NT; ++t) sumi1[t] = sumi2[t] = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib += 2, qs += 32) {
      const __m256i v1 = iq4_values(qs), v2 = iq4_values(qs + 16);
      const __m256i ls1 = _mm256_set1_epi16(static_cast<int16_t>(iq4_xs_scale(x[i], ib)));
      const __m256i ls2 = _mm256_set1_epi16(static_cast<int16_t>(iq4_xs_scale(x[i], ib + 1)));
      for (int t = 0; t < NT; ++t) {
        const int8_t* q8 = y[t][i].qs + 32 * ib;
        const __m256i p1 = iq::mul_add_i8(v1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8)));
        const __m256i p2 = iq::mul_add_i8(v2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q8 + 32)));
        sumi1[t] = _mm256_add_epi32(sumi1[t], _mm256_madd_epi16(p1, ls1));
        sumi2[t] = _mm256_add_epi32(sumi2[t], _mm256_madd_epi16(p2, ls2));
      }
    }
    const float dx = iq::fp16_to_f32_f16c(x[i].d);
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[t][i].d), _mm256_cvtepi32_ps(_mm256_add_epi32(sumi1[t], sumi2[t])), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = iq::hsum_f32x8(acc[t]);
}

float vec_dot_iq4_xs_q8_K_avx2(int64_t n, const void* w, const void* a) { return single_token<iq4_xs_avx2<1>>(n, w, a); }

extern const FormatOps kFormatIQ4_NL = {
    "IQ4_NL", GgmlType::IQ4_NL, QK4_NL, sizeof(block_iq4_nl), GgmlType::Q8_0, dequant_iq4_nl,
    {vec_dot_iq4_nl_q8_0, vec_dot_iq4_nl_q8_0_avx2, nullptr, nullptr}};
extern const FormatOps kFormatIQ4_XS = {
    "IQ4_XS", GgmlType::IQ4_XS, QK_K, sizeof(block_iq4_xs), GgmlType::Q8_K, dequant_iq4_xs,
    {vec_dot_iq4_xs_q8_K, vec_dot_iq4_xs_q8_K_avx2, nullptr, nullptr},
    {nullptr, iq4_xs_avx2<kMultiTokens>, nullptr, nullptr},
    gemm_iq4_xs_amx};

}  // namespace moebox
