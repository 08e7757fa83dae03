// Activation rows quantized per call to the weight format's dot-product type.
// Rounding: d = max|x| / 127 per block, q = round(x / d) clamped to [-127, 127],
// so |x - d*q| <= d/2 for every element (the bound the tests rely on).
#include <immintrin.h>

#include <cmath>

#include "formats/simd_avx2.h"
#include "moebox/formats.h"

namespace moebox {
namespace {

void quantize_q8_K_scalar(const float* x, block_q8_K* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    float amax = 0.f;
    for (int i = 0; i < QK_K; ++i) amax = std::fmax(amax, std::fabs(x[i]));
    const float d = amax / 127.f;
    const float id = d > 0.f ? 1.f / d : 0.f;
    y[b].d = d;
    for (int i = 0; i < QK_K; ++i) {
      const int q = static_cast<int>(std::nearbyint(x[i] * id));
      y[b].qs[i] = static_cast<int8_t>(q > 127 ? 127 : (q < -127 ? -127 : q));
    }
    for (int j = 0; j < QK_K / 16; ++j) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += y[b].qs[16 * j + i];
      y[b].bsums[j] = static_cast<int16_t>(s);
    }
  }
}

// The scale is stored as fp16: quantize with the rounded scale so the bound holds for d16.
void quantize_q8_0_scalar(const float* x, block_q8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
    float amax = 0.f;
    for (int i = 0; i < QK8_0; ++i) amax = std::fmax(amax, std::fabs(x[i]));
    const uint16_t d16 = f32_to_fp16(amax / 127.f);
    const float d = fp16_to_f32(d16);
    const float id = d > 0.f ? 1.f / d : 0.f;
    y[b].d = d16;
    for (int i = 0; i < QK8_0; ++i) {
      const int q = static_cast<int>(std::nearbyint(x[i] * id));
      y[b].qs[i] = static_cast<int8_t>(q > 127 ? 127 : (q < -127 ? -127 : q));
    }
  }
}

void quantize_q8_1_scalar(const float* x, block_q8_1* y, int64_t n) {
  for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
    float amax = 0.f;
    for (int i = 0; i < QK8_0; ++i) amax = std::fmax(amax, std::fabs(x[i]));
    const float d = amax / 127.f;
    const float id = d > 0.f ? 1.f / d : 0.f;
    int sum = 0;
    for (int i = 0; i < QK8_0; ++i) {
      const int q = static_cast<int>(std::nearbyint(x[i] * id));
      y[b].qs[i] = static_cast<int8_t>(q > 127 ? 127 : (q < -127 ? -127 : q));
      sum += y[b].qs[i];
    }
    y[b].d = d;
    y[b].s = d * static_cast<float>(sum);
  }
}

MOEBOX_TARGET_AVX2 inline float amax8(const float* x, int count) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < count; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 r = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
  r = _mm_max_ps(r, _mm_movehl_ps(r, r));
  r = _mm_max_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

// 32 floats * id -> 32 int8 (round to nearest even, as nearbyint does), clamped to +-127.
MOEBOX_TARGET_AVX2 inline __m256i quantize32(const float* x, __m256 id) {
  __m256i i[4];
  for (int k = 0; k < 4; ++k) {
    __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.f)), _mm256_set1_ps(127.f));
    i[k] = _mm256_cvtps_epi32(v);
  }
  // packs work per 128-bit lane: fix the order with a final permute.
  const __m256i p01 = _mm256_packs_epi32(i[0], i[1]), p23 = _mm256_packs_epi32(i[2], i[3]);
  const __m256i p = _mm256_packs_epi16(p01, p23);
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

MOEBOX_TARGET_AVX2 void quantize_q8_K_avx2(const float* x, block_q8_K* y, int64_t n) {
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
    const float amax = amax8(x, QK_K);
    const float d = amax / 127.f;
    const __m256 id = _mm256_set1_ps(d > 0.f ? 1.f / d : 0.f);
    y[b].d = d;
    for (int j = 0; j < QK_K / 32; ++j) {
      const __m256i q = quantize32(x + 32 * j, id);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs + 32 * j), q);
      // two sums of 16
      const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);  // 16 pair sums
      const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));  // 8 sums of 4
      const __m256i s64 = _mm256_hadd_epi32(s32, s32);                    // per lane: [a0+a1, a2+a3, ..]
      const __m256i s128 = _mm256_hadd_epi32(s64, s64);
      y[b].bsums[2 * j] = static_cast<int16_t>(_mm256_extract_epi32(s128, 0));
      y[b].bsums[2 * j + 1] = static_cast<int16_t>(_mm256_extract_epi32(s128, 4));
    }
  }
}

MOEBOX_TARGET_AVX2 void quantize_q8_0_avx2(const float* x, block_q8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
    const uint16_t d16 = avx2::to_fp16(amax8(x, QK8_0) / 127.f);
    const float d = avx2::fp16(d16);
    y[b].d = d16;
    const __m256i q = quantize32(x, _mm256_set1_ps(d > 0.f ? 1.f / d : 0.f));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs), q);
  }
}

MOEBOX_TARGET_AVX2 void quantize_q8_1_avx2(const float* x, block_q8_1* y, int64_t n) {
  for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
    const float d = amax8(x, QK8_0) / 127.f;
    const __m256i q = quantize32(x, _mm256_set1_ps(d > 0.f ? 1.f / d : 0.f));
    y[b].d = d;
    y[b].s = d * static_cast<float>(avx2::hsum_epi32(avx2::sum_s8(q)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs), q);
  }
}

}  // namespace

int64_t act_row_bytes(GgmlType act_type, int64_t n) {
  switch (act_type) {
    case GgmlType::Q8_K:
      return n / QK_K * static_cast<int64_t>(sizeof(block_q8_K));
    case GgmlType::Q8_0:
      return n / QK8_0 * static_cast<int64_t>(sizeof(block_q8_0));
    case GgmlType::Q8_1:
      return n / QK8_0 * static_cast<int64_t>(sizeof(block_q8_1));
    default:
      return n * static_cast<int64_t>(sizeof(float));
  }
}

void quantize_act_row(GgmlType act_type, const float* x, void* dst, int64_t n, Isa isa) {
  switch (act_type) {
    case GgmlType::Q8_K:
      if (isa >= kIsaAvx2)
        quantize_q8_K_avx2(x, static_cast<block_q8_K*>(dst), n);
      else
        quantize_q8_K_scalar(x, static_cast<block_q8_K*>(dst), n);
      return;
    case GgmlType::Q8_0:
      if (isa >= kIsaAvx2)
        quantize_q8_0_avx2(x, static_cast<block_q8_0*>(dst), n);
      else
        quantize_q8_0_scalar(x, static_cast<block_q8_0*>(dst), n);
      return;
    case GgmlType::Q8_1:
      if (isa >= kIsaAvx2)
        quantize_q8_1_avx2(x, static_cast<block_q8_1*>(dst), n);
      else
        quantize_q8_1_scalar(x, static_cast<block_q8_1*>(dst), n);
      return;
    default:
      std::memcpy(dst, x, n * sizeof(float));
  }
}

}  // namespace moebox
