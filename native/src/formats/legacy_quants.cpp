// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: scalar reference dequantizers and AVX2 dot
// products against Q8_0 activation blocks (Q8_1 for the offset formats Q4_1, Q5_1).
#include "legacy_quants.h"

#include <immintrin.h>

#include <cmath>

#include "simd_avx2.h"

namespace moebox {
namespace {

// --- scalar reference (ggml's dequantize_row_*) ---
void dequant_q8_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q8_0*>(src);
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < QK8_0; ++j) y[i * QK8_0 + j] = d * x[i].qs[j];
  }
}

void dequant_q4_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q4_0*>(src);
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < QK8_0 / 2; ++j) {
      y[i * QK8_0 + j] = ((x[i].qs[j] & 0x0F) - 8) * d;
      y[i * QK8_0 + j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequant_q4_1(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q4_1*>(src);
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
    for (int j = 0; j < QK8_0 / 2; ++j) {
      y[i * QK8_0 + j] = (x[i].qs[j] & 0x0F) * d + m;
      y[i * QK8_0 + j + 16] = (x[i].qs[j] >> 4) * d + m;
    }
  }
}

void dequant_q5_0(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q5_0*>(src);
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    const float d = fp16_to_f32(x[i].d);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < QK8_0 / 2; ++j) {
      const int h0 = ((qh >> j) << 4) & 0x10;
      const int h1 = (qh >> (j + 12)) & 0x10;
      y[i * QK8_0 + j] = (((x[i].qs[j] & 0x0F) | h0) - 16) * d;
      y[i * QK8_0 + j + 16] = (((x[i].qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void dequant_q5_1(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q5_1*>(src);
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < QK8_0 / 2; ++j) {
      const int h0 = ((qh >> j) << 4) & 0x10;
      const int h1 = (qh >> (j + 12)) & 0x10;
      y[i * QK8_0 + j] = ((x[i].qs[j] & 0x0F) | h0) * d + m;
      y[i * QK8_0 + j + 16] = ((x[i].qs[j] >> 4) | h1) * d + m;
    }
  }
}

// --- AVX2 ---
// Per block: acc += d_w * d_x * sum(q_w * q_x)  (+ m_w * d_x * sum(q_x) for the offset formats).
MOEBOX_TARGET_AVX2 inline __m256 q8_0_block(const block_q8_0& x, const block_q8_0& y, __m256 acc) {
  const __m256 d = _mm256_set1_ps(avx2::fp16(x.d) * avx2::fp16(y.d));
  const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
  const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs));
  return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(avx2::dot_s8(qx, qy)), acc);
}

// Even and odd blocks go to separate accumulators: two dependency chains instead of one.
MOEBOX_TARGET_AVX2 float vec_dot_q8_0_avx2(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q8_0*>(w);
  const auto* y = static_cast<const block_q8_0*>(a);
  const int64_t nb = n / QK8_0;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    acc0 = q8_0_block(x[i], y[i], acc0);
    acc1 = q8_0_block(x[i + 1], y[i + 1], acc1);
  }
  if (i < nb) acc0 = q8_0_block(x[i], y[i], acc0);
  return avx2::hsum(_mm256_add_ps(acc0, acc1));
}

MOEBOX_TARGET_AVX2 float vec_dot_q4_0_avx2(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q4_0*>(w);
  const auto* y = static_cast<const block_q8_0*>(a);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    const __m256 d = _mm256_set1_ps(avx2::fp16(x[i].d) * avx2::fp16(y[i].d));
    const __m256i qx = _mm256_sub_epi8(avx2::bytes_from_nibbles_32(x[i].qs), _mm256_set1_epi8(8));
    const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(avx2::dot_s8(qx, qy)), acc);
  }
  return avx2::hsum(acc);
}

// The offset formats dot with Q8_1 activations: m_w * d_x * sum(q_x) is m_w * s_x, one scalar
// multiply-add per block (explicit fma, so the multi-token kernel rounds exactly alike).
// A block's fp16 d and m (adjacent) are converted together.
MOEBOX_TARGET_AVX2 inline __m128 fp16_pair(const uint16_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(v)));  // [d, m, 0, 0]
}

// One Q4_1 block against one Q8_1 block: acc += d_w d_x sum(q_w q_x), summs += m_w s_x.
MOEBOX_TARGET_AVX2 inline void q4_1_block(const block_q4_1& x, __m256i qx, const block_q8_1& y, __m256& acc,
                                          float& summs) {
  const __m128 dm = fp16_pair(&x.d);
  const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs));
  acc = _mm256_fmadd_ps(_mm256_set1_ps(_mm_cvtss_f32(dm) * y.d), _mm256_cvtepi32_ps(avx2::dot_us8(qx, qy)), acc);
  summs = std::fma(_mm_cvtss_f32(_mm_movehdup_ps(dm)), y.s, summs);
}

// Even and odd blocks go to separate accumulators: two dependency chains instead of one.
MOEBOX_TARGET_AVX2 float vec_dot_q4_1_avx2(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q4_1*>(w);
  const auto* y = static_cast<const block_q8_1*>(a);
  const int64_t nb = n / QK8_0;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float summs0 = 0.f, summs1 = 0.f;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    q4_1_block(x[i], avx2::bytes_from_nibbles_32(x[i].qs), y[i], acc0, summs0);
    q4_1_block(x[i + 1], avx2::bytes_from_nibbles_32(x[i + 1].qs), y[i + 1], acc1, summs1);
  }
  if (i < nb) q4_1_block(x[i], avx2::bytes_from_nibbles_32(x[i].qs), y[i], acc0, summs0);
  return avx2::hsum(_mm256_add_ps(acc0, acc1)) + (summs0 + summs1);
}

// Two Q4_1 rows against one activation row: each row's sums built exactly as vec_dot_q4_1_avx2 builds them.
MOEBOX_TARGET_AVX2 void vec_dot_q4_1_pair_avx2(int64_t n, const void* w0, const void* w1, const void* a, float* out) {
  const auto* x0 = static_cast<const block_q4_1*>(w0);
  const auto* x1 = static_cast<const block_q4_1*>(w1);
  const auto* y = static_cast<const block_q8_1*>(a);
  const int64_t nb = n / QK8_0;
  __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps(), a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps();
  float s00 = 0.f, s01 = 0.f, s10 = 0.f, s11 = 0.f;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    q4_1_block(x0[i], avx2::bytes_from_nibbles_32(x0[i].qs), y[i], a00, s00);
    q4_1_block(x1[i], avx2::bytes_from_nibbles_32(x1[i].qs), y[i], a10, s10);
    q4_1_block(x0[i + 1], avx2::bytes_from_nibbles_32(x0[i + 1].qs), y[i + 1], a01, s01);
    q4_1_block(x1[i + 1], avx2::bytes_from_nibbles_32(x1[i + 1].qs), y[i + 1], a11, s11);
  }
  if (i < nb) {
    q4_1_block(x0[i], avx2::bytes_from_nibbles_32(x0[i].qs), y[i], a00, s00);
    q4_1_block(x1[i], avx2::bytes_from_nibbles_32(x1[i].qs), y[i], a10, s10);
  }
  out[0] = avx2::hsum(_mm256_add_ps(a00, a01)) + (s00 + s01);
  out[1] = avx2::hsum(_mm256_add_ps(a10, a11)) + (s10 + s11);
}

// kMultiTokens activation rows against one Q4_1 row: nibbles unpacked once per block,
// each token's sums built exactly as vec_dot_q4_1_avx2 builds them.
MOEBOX_TARGET_AVX2 void vec_dot_q4_1_multi_avx2(int64_t n, const void* w, const void* const* act, float* out) {
  const auto* x = static_cast<const block_q4_1*>(w);
  const int64_t nb = n / QK8_0;
  const block_q8_1* y[kMultiTokens];
  __m256 acc[2][kMultiTokens];
  float summs[2][kMultiTokens];
  for (int k = 0; k < kMultiTokens; ++k) {
    y[k] = static_cast<const block_q8_1*>(act[k]);
    acc[0][k] = acc[1][k] = _mm256_setzero_ps();
    summs[0][k] = summs[1][k] = 0.f;
  }
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m256i qx0 = avx2::bytes_from_nibbles_32(x[i].qs), qx1 = avx2::bytes_from_nibbles_32(x[i + 1].qs);
    for (int k = 0; k < kMultiTokens; ++k) {
      q4_1_block(x[i], qx0, y[k][i], acc[0][k], summs[0][k]);
      q4_1_block(x[i + 1], qx1, y[k][i + 1], acc[1][k], summs[1][k]);
    }
  }
  if (i < nb) {
    const __m256i qx = avx2::bytes_from_nibbles_32(x[i].qs);
    for (int k = 0; k < kMultiTokens; ++k) q4_1_block(x[i], qx, y[k][i], acc[0][k], summs[0][k]);
  }
  for (int k = 0; k < kMultiTokens; ++k)
    out[k] = avx2::hsum(_mm256_add_ps(acc[0][k], acc[1][k])) + (summs[0][k] + summs[1][k]);
}

MOEBOX_TARGET_AVX2 float vec_dot_q5_0_avx2(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q5_0*>(w);
  const auto* y = static_cast<const block_q8_0*>(a);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    const __m256 d = _mm256_set1_ps(avx2::fp16(x[i].d) * avx2::fp16(y[i].d));
    // q - 16 as int8: where the high bit is clear, set the top nibble (nibble - 16).
    const __m256i hi = _mm256_andnot_si256(avx2::bytes_from_bits_32(x[i].qh), _mm256_set1_epi8(static_cast<char>(0xF0)));
    const __m256i qx = _mm256_or_si256(avx2::bytes_from_nibbles_32(x[i].qs), hi);
    const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
    acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(avx2::dot_s8(qx, qy)), acc);
  }
  return avx2::hsum(acc);
}

MOEBOX_TARGET_AVX2 float vec_dot_q5_1_avx2(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q5_1*>(w);
  const auto* y = static_cast<const block_q8_1*>(a);
  __m256 acc = _mm256_setzero_ps();
  float summs = 0.f;
  for (int64_t i = 0; i < n / QK8_0; ++i) {
    const __m256i hi = _mm256_and_si256(avx2::bytes_from_bits_32(x[i].qh), _mm256_set1_epi8(0x10));
    const __m256i qx = _mm256_or_si256(avx2::bytes_from_nibbles_32(x[i].qs), hi);
    const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs));
    const __m128 dm = fp16_pair(&x[i].d);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(_mm_cvtss_f32(dm) * y[i].d), _mm256_cvtepi32_ps(avx2::dot_us8(qx, qy)), acc);
    summs = std::fma(_mm_cvtss_f32(_mm_movehdup_ps(dm)), y[i].s, summs);
  }
  return avx2::hsum(acc) + summs;
}

MOEBOX_TARGET_AVX512 inline __m512i join(const int8_t* p, const int8_t* q) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)), 1);
}

// --- AVX-512 + VNNI: two blocks per register; (x + 128) * y - 128 * sum(y) keeps vpdpbusd's u8 x s8 form ---
MOEBOX_TARGET_AVX512 float vec_dot_q8_0_avx512(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q8_0*>(w);
  const auto* y = static_cast<const block_q8_0*>(a);
  const int64_t nb = n / QK8_0;
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80)), ones = _mm512_set1_epi8(1);
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const __m512i qx = join(x[i].qs, x[i + 1].qs), qy = join(y[i].qs, y[i + 1].qs);
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(qx, bias), qy);
    const __m512i sy = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, qy);
    const __m512i s = _mm512_sub_epi32(dot, _mm512_slli_epi32(sy, 7));
    const __m512 d = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(_cvtsh_ss(x[i].d) * _cvtsh_ss(y[i].d)),
                                          _mm512_set1_ps(_cvtsh_ss(x[i + 1].d) * _cvtsh_ss(y[i + 1].d)));
    acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc);
  }
  float r = _mm512_reduce_add_ps(acc);
  for (; i < nb; ++i) {
    int s = 0;
    for (int j = 0; j < QK8_0; ++j) s += x[i].qs[j] * y[i].qs[j];
    r += _cvtsh_ss(x[i].d) * _cvtsh_ss(y[i].d) * static_cast<float>(s);
  }
  return r;
}

}  // namespace

#define MOEBOX_LEGACY(NAME, BLOCK, LOWER, ACT, AVX512, AVX2_MULTI, AVX2_PAIR)                    \
  extern const FormatOps kFormat##NAME = {                                                      \
      #NAME, GgmlType::NAME, QK8_0, sizeof(BLOCK), GgmlType::ACT, dequant_##LOWER,              \
      {vec_dot_ref<dequant_##LOWER, QK8_0, sizeof(BLOCK), GgmlType::ACT>, vec_dot_##LOWER##_avx2, \
       AVX512, nullptr},                                                                        \
      {nullptr, AVX2_MULTI, nullptr, nullptr}, nullptr,                                         \
      {nullptr, AVX2_PAIR, nullptr, nullptr}};
MOEBOX_LEGACY(Q8_0, block_q8_0, q8_0, Q8_0, vec_dot_q8_0_avx512, nullptr, nullptr)
MOEBOX_LEGACY(Q4_0, block_q4_0, q4_0, Q8_0, nullptr, nullptr, nullptr)
MOEBOX_LEGACY(Q4_1, block_q4_1, q4_1, Q8_1, nullptr, vec_dot_q4_1_multi_avx2, vec_dot_q4_1_pair_avx2)
MOEBOX_LEGACY(Q5_0, block_q5_0, q5_0, Q8_0, nullptr, nullptr, nullptr)
MOEBOX_LEGACY(Q5_1, block_q5_1, q5_1, Q8_1, nullptr, nullptr, nullptr)
#undef MOEBOX_LEGACY

}  // namespace moebox
