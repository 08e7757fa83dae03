// AVX-512 (F/BW/VL/DQ + VNNI) dot products for Q2_K, Q3_K, Q4_K and Q6_K against
// Q8_K activations. vpdpbusd does the u8 x s8 4-way products without the int16
// saturation of maddubs; formats with a signed offset (Q3_K: -4, Q6_K: -32) are
// dotted as unsigned and corrected once per super-block with the bsums.
#include <immintrin.h>

#include "k_quants.h"

namespace moebox {
namespace {

MOEBOX_TARGET_AVX512 inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// [a (32 bytes), b (32 bytes)] in one register.
MOEBOX_TARGET_AVX512 inline __m512i join(const void* a, const void* b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(load256(a)), load256(b), 1);
}

// Index vector: lanes 0-3 -> a, 4-7 -> b, 8-11 -> c, 12-15 -> d.
MOEBOX_TARGET_AVX512 inline __m512i idx4(int a, int b, int c, int d) {
  return _mm512_setr_epi32(a, a, a, a, b, b, b, b, c, c, c, c, d, d, d, d);
}
// Lanes 0-7 -> a, 8-15 -> b.
MOEBOX_TARGET_AVX512 inline __m512i idx8(int a, int b) {
  return _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
}

MOEBOX_TARGET_AVX512 inline float hsum512(__m512 v) { return _mm512_reduce_add_ps(v); }

}  // namespace

MOEBOX_TARGET_AVX512 float vec_dot_q2_K_avx512(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q2_K*>(w);
  const auto* y = static_cast<const block_q8_K*>(a);
  const __m512i m3 = _mm512_set1_epi8(3);
  __m512 acc = _mm512_setzero_ps();
  __m256 acc_m = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = y[i].d * _cvtsh_ss(x[i].d), dmin = -y[i].d * _cvtsh_ss(x[i].dmin);
    const __m128i sm = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m128i mins8 = _mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(0xF));
    const __m256i prod_m = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mins8), load256(y[i].bsums));
    acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod_m), acc_m);
    const __m512i sc32 = _mm512_cvtepu8_epi32(_mm_and_si128(sm, _mm_set1_epi8(0xF)));
    const __m512i bits = _mm512_loadu_si512(x[i].qs);  // bytes 0-31: first 128 elements, 32-63: second
    const int8_t* q8 = y[i].qs;
    __m512i sumi = _mm512_setzero_si512();
    for (int s = 0; s < 4; ++s) {
      const __m512i q = _mm512_and_si512(_mm512_srli_epi16(bits, 2 * s), m3);
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, join(q8 + 32 * s, q8 + 128 + 32 * s));
      const __m512i sc = _mm512_permutexvar_epi32(idx4(2 * s, 2 * s + 1, 8 + 2 * s, 9 + 2 * s), sc32);
      sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(sc, p));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
  }
  __m128 m = _mm_add_ps(_mm256_extractf128_ps(acc_m, 1), _mm256_castps256_ps128(acc_m));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return hsum512(acc) + _mm_cvtss_f32(m);
}

MOEBOX_TARGET_AVX512 float vec_dot_q3_K_avx512(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q3_K*>(w);
  const auto* y = static_cast<const block_q8_K*>(a);
  const __m512i m3 = _mm512_set1_epi8(3), m1 = _mm512_set1_epi8(1);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = y[i].d * _cvtsh_ss(x[i].d);
    uint32_t aux[4];
    unpack_scales_q3_K(x[i].scales, aux);
    const __m128i sc8 = _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(aux)), _mm_set1_epi8(32));
    const __m512i sc32 = _mm512_cvtepi8_epi32(sc8);
    // value = (q + 4*hbit) - 4: dot the unsigned part, subtract 4 * sum_k sc_k * bsums_k.
    const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), load256(y[i].bsums));
    const __m256i hm = load256(x[i].hmask);
    const __m512i hbits = _mm512_inserti64x4(_mm512_castsi256_si512(hm), _mm256_srli_epi16(hm, 4), 1);
    const __m512i bits = _mm512_loadu_si512(x[i].qs);
    const int8_t* q8 = y[i].qs;
    __m512i sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 2)));
    for (int s = 0; s < 4; ++s) {
      const __m512i lo = _mm512_and_si512(_mm512_srli_epi16(bits, 2 * s), m3);
      const __m512i hi = _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hbits, s), m1), 2);
      const __m512i q = _mm512_or_si512(lo, hi);
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, join(q8 + 32 * s, q8 + 128 + 32 * s));
      const __m512i sc = _mm512_permutexvar_epi32(idx4(2 * s, 2 * s + 1, 8 + 2 * s, 9 + 2 * s), sc32);
      sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(sc, p));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return hsum512(acc);
}

MOEBOX_TARGET_AVX512 float vec_dot_q4_K_avx512(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q4_K*>(w);
  const auto* y = static_cast<const block_q8_K*>(a);
  const __m512i m4 = _mm512_set1_epi8(0xF);
  __m512 acc = _mm512_setzero_ps();
  __m128 acc_m = _mm_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = y[i].d * _cvtsh_ss(x[i].d), dmin = -y[i].d * _cvtsh_ss(x[i].dmin);
    uint32_t utmp[4];
    unpack_scales_mins_k4(x[i].scales, utmp);
    const __m128i sm8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(utmp));  // 8 scales, 8 mins
    const __m256i q8sums = load256(y[i].bsums);
    const __m128i q8s = _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
    const __m128i prod_m = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_srli_si128(sm8, 8)), q8s);
    acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod_m), acc_m);
    const __m512i sc32 = _mm512_cvtepu8_epi32(sm8);
    const int8_t* q8 = y[i].qs;
    __m512i sumi = _mm512_setzero_si512();
    for (int p = 0; p < 2; ++p) {  // 128 elements per step: 64 bytes of nibbles
      const __m512i bits = _mm512_loadu_si512(x[i].qs + 64 * p);
      const __m512i lo = _mm512_and_si512(bits, m4);                        // sub-blocks 4p, 4p+2
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);  // sub-blocks 4p+1, 4p+3
      const int8_t* q = q8 + 128 * p;
      const __m512i pl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, join(q, q + 64));
      const __m512i ph = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, join(q + 32, q + 96));
      sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(_mm512_permutexvar_epi32(idx8(4 * p, 4 * p + 2), sc32), pl));
      sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(_mm512_permutexvar_epi32(idx8(4 * p + 1, 4 * p + 3), sc32), ph));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
  }
  acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
  acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
  return hsum512(acc) + _mm_cvtss_f32(acc_m);
}

MOEBOX_TARGET_AVX512 float vec_dot_q6_K_avx512(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q6_K*>(w);
  const auto* y = static_cast<const block_q8_K*>(a);
  const __m512i m4 = _mm512_set1_epi8(0xF), m3 = _mm512_set1_epi8(3);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = y[i].d * _cvtsh_ss(x[i].d);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m512i sc32 = _mm512_cvtepi8_epi32(sc8);
    // value = q - 32: dot the unsigned 6-bit q, subtract 32 * sum_k sc_k * bsums_k.
    const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), load256(y[i].bsums));
    __m512i sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5)));
    const int8_t* q8 = y[i].qs;
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(x[i].ql + 64 * h);  // bytes 0-31: ql[l], 32-63: ql[32+l]
      const __m256i qh = load256(x[i].qh + 32 * h);
      const __m512i hb = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
      const __m512i q01 = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16(_mm512_and_si512(hb, m3), 4));
      const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb, 4), m3), 4));
      const int8_t* q = q8 + 128 * h;
      const __m512i p01 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q01, _mm512_loadu_si512(q));
      const __m512i p23 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q23, _mm512_loadu_si512(q + 64));
      const int s = 8 * h;
      sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(_mm512_permutexvar_epi32(idx4(s, s + 1, s + 2, s + 3), sc32), p01));
      sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(_mm512_permutexvar_epi32(idx4(s + 4, s + 5, s + 6, s + 7), sc32), p23));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
  }
  return hsum512(acc);
}

}  // namespace moebox
