// AVX-512 (F/BW/VL + VNNI) dot products for Q2_K, Q3_K, Q4_K and Q6_K against
// Q8_K activations. Each step handles 64 consecutive elements: the weight
// quants are unpacked into one register in element order (two 256-bit halves
// joined with vshufi64x2), so the activations load straight; vpmaddubsw gives
// int16 pair sums (no saturation: |q_w| <= 63, |q_x| <= 127) and vpdpwssd (VNNI)
// multiplies them with the sub-block scales, broadcast per 8 or 16 lanes, while
// accumulating. Signed offsets (Q3_K: -4, Q6_K: -32) and the minimums (Q2_K, Q4_K)
// are taken out once per super-block with the activation block sums (bsums); the
// minimum term has its own accumulator, and a block's d and dmin are converted by
// one instruction.
#include <immintrin.h>

#include "k_quants.h"
#include "simd_avx2.h"

namespace moebox {
namespace {

MOEBOX_TARGET_AVX512 inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// [a.low256, b.low256] and [a.high256, b.high256].
MOEBOX_TARGET_AVX512 inline __m512i lows(__m512i a, __m512i b) { return _mm512_shuffle_i64x2(a, b, 0x44); }
MOEBOX_TARGET_AVX512 inline __m512i highs(__m512i a, __m512i b) { return _mm512_shuffle_i64x2(a, b, 0xEE); }

// Index vectors for vpermw: 64 elements = 32 int16 pair sums; sub-blocks of 16
// elements (8 lanes each) starting at sub-block 4g, or of 32 elements (16 lanes)
// starting at 2g.
MOEBOX_TARGET_AVX512 inline __m512i scale_index16(int g) {
  alignas(64) int16_t idx[32];
  for (int i = 0; i < 32; ++i) idx[i] = static_cast<int16_t>(4 * g + i / 8);
  return _mm512_load_si512(idx);
}
MOEBOX_TARGET_AVX512 inline __m512i scale_index32(int g) {
  alignas(64) int16_t idx[32];
  for (int i = 0; i < 32; ++i) idx[i] = static_cast<int16_t>(2 * g + i / 16);
  return _mm512_load_si512(idx);
}

// sum over 64 elements of q_w * q_x * scale (int32 lanes).
MOEBOX_TARGET_AVX512 inline __m512i scaled_dot(__m512i qw, const int8_t* qx, __m512i scale16) {
  return _mm512_madd_epi16(scale16, _mm512_maddubs_epi16(qw, _mm512_loadu_si512(qx)));
}

// acc + the same sum, in one vpdpwssd.
MOEBOX_TARGET_AVX512 inline __m512i add_scaled_dot(__m512i acc, __m512i qw, const int8_t* qx, __m512i scale16) {
  return _mm512_dpwssd_epi32(acc, scale16, _mm512_maddubs_epi16(qw, _mm512_loadu_si512(qx)));
}

MOEBOX_TARGET_AVX512 inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

MOEBOX_TARGET_AVX512 inline float hsum(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
}

// NT activation rows per weight row: unpacking and scale vectors are shared (see VecDotMultiFn).
template <int NT>
MOEBOX_TARGET_AVX512 void q2_K_avx512(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const block_q2_K*>(w);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(a[t]);
  const __m512i m3 = _mm512_set1_epi8(3);
  const __m512i idx[4] = {scale_index16(0), scale_index16(1), scale_index16(2), scale_index16(3)};
  __m512 acc[NT];
  __m256 acc_m[NT];
  for (int t = 0; t < NT; ++t) {
    acc[t] = _mm512_setzero_ps();
    acc_m[t] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const __m128 dm = avx2::fp16x2(&x[i].d);
    const float dx = _mm_cvtss_f32(dm);
    const __m256 dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    // scale byte k: low nibble the scale of sub-block k, high nibble its minimum
    const __m256i raw = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales)));
    const __m256i mins = _mm256_srli_epi16(raw, 4);
    const __m512i sc16 = _mm512_castsi256_si512(_mm256_and_si256(raw, _mm256_set1_epi16(0xF)));
    __m512i sumi[NT];
    for (int t = 0; t < NT; ++t) {
      const __m256i prod_m = _mm256_madd_epi16(mins, load256(y[t][i].bsums));
      acc_m[t] = _mm256_fmadd_ps(_mm256_mul_ps(dmin, _mm256_broadcast_ss(&y[t][i].d)), _mm256_cvtepi32_ps(prod_m), acc_m[t]);
      sumi[t] = _mm512_setzero_si512();
    }
    // v[s] = quants at shift 2s: bytes 0-31 are elements 32s.., bytes 32-63 elements 128+32s..
    const __m512i bits = _mm512_loadu_si512(x[i].qs);
    const __m512i v0 = _mm512_and_si512(bits, m3), v1 = _mm512_and_si512(_mm512_srli_epi16(bits, 2), m3);
    const __m512i v2 = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m3), v3 = _mm512_and_si512(_mm512_srli_epi16(bits, 6), m3);
    const __m512i q[4] = {lows(v0, v1), lows(v2, v3), highs(v0, v1), highs(v2, v3)};  // elements 64g..64g+63
    for (int g = 0; g < 4; ++g) {
      const __m512i sc = _mm512_permutexvar_epi16(idx[g], sc16);
      for (int t = 0; t < NT; ++t) sumi[t] = add_scaled_dot(sumi[t], q[g], y[t][i].qs + 64 * g, sc);
    }
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(y[t][i].d * dx), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]) - hsum(acc_m[t]);
}

}  // namespace

namespace {

template <int NT>
MOEBOX_TARGET_AVX512 void q3_K_avx512(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const block_q3_K*>(w);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(a[t]);
  const __m512i m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(4);
  const __m512i idx[4] = {scale_index16(0), scale_index16(1), scale_index16(2), scale_index16(3)};
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float dx = _cvtsh_ss(x[i].d);
    uint32_t aux[4];
    unpack_scales_q3_K(x[i].scales, aux);
    const __m128i sc8 = _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(aux)), _mm_set1_epi8(32));
    const __m256i sc16_256 = _mm256_cvtepi8_epi16(sc8);
    const __m512i sc16 = _mm512_castsi256_si512(sc16_256);
    // high bits: bytes 0-31 use bit s of hmask (first 128 elements), bytes 32-63 bit 4+s.
    const __m256i hm = load256(x[i].hmask);
    const __m512i hb = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_slli_epi16(hm, 2)), _mm256_srli_epi16(hm, 2), 1);
    const __m512i bits = _mm512_loadu_si512(x[i].qs);
    __m512i v[4];
    for (int s = 0; s < 4; ++s) {
      const __m512i lo = _mm512_and_si512(s ? _mm512_srli_epi16(bits, 2 * s) : bits, m3);
      // bit s (or 4+s) moved to bit 2
      const __m512i hi = _mm512_and_si512(s ? _mm512_srli_epi16(hb, s) : hb, m4);
      v[s] = _mm512_or_si512(lo, hi);
    }
    const __m512i q[4] = {lows(v[0], v[1]), lows(v[2], v[3]), highs(v[0], v[1]), highs(v[2], v[3])};  // elements 64g..
    __m512i sc[4];
    for (int g = 0; g < 4; ++g) sc[g] = _mm512_permutexvar_epi16(idx[g], sc16);
    for (int t = 0; t < NT; ++t) {
      // value = (q + 4*hbit) - 4: dot the unsigned part, subtract 4 * sum_k sc_k * bsums_k.
      const __m256i corr = _mm256_madd_epi16(sc16_256, load256(y[t][i].bsums));
      __m512i sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 2)));
      for (int g = 0; g < 4; ++g) sumi = _mm512_add_epi32(sumi, scaled_dot(q[g], y[t][i].qs + 64 * g, sc[g]));
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(y[t][i].d * dx), _mm512_cvtepi32_ps(sumi), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

}  // namespace

float vec_dot_q3_K_avx512(int64_t n, const void* w, const void* a) { return single_token<q3_K_avx512<1>>(n, w, a); }
void q3_K_avx512_multi(int64_t n, const void* w, const void* const* a, float* out) { q3_K_avx512<kMultiTokens>(n, w, a, out); }

namespace {

template <int NT>
MOEBOX_TARGET_AVX512 void q4_K_avx512(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const block_q4_K*>(w);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(a[t]);
  const __m512i m4 = _mm512_set1_epi8(0xF);
  const __m512i idx[4] = {scale_index32(0), scale_index32(1), scale_index32(2), scale_index32(3)};
  __m512 acc[NT];
  __m256 acc_m[NT];
  for (int t = 0; t < NT; ++t) {
    acc[t] = _mm512_setzero_ps();
    acc_m[t] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const __m128 dm = avx2::fp16x2(&x[i].d);
    const float dx = _mm_cvtss_f32(dm);
    const __m256 dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    const __m128i sm8 = avx2::scales_mins_k4(x[i].scales);  // 8 scales, 8 mins
    const __m256i mins = avx2::mins_k4_per_bsum(sm8);
    const __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(sm8));
    __m512i sumi[NT];
    for (int t = 0; t < NT; ++t) {
      const __m256i prod_m = _mm256_madd_epi16(mins, load256(y[t][i].bsums));
      acc_m[t] = _mm256_fmadd_ps(_mm256_mul_ps(dmin, _mm256_broadcast_ss(&y[t][i].d)), _mm256_cvtepi32_ps(prod_m), acc_m[t]);
      sumi[t] = _mm512_setzero_si512();
    }
    for (int p = 0; p < 2; ++p) {
      // 64 bytes of nibbles = 128 elements; per 32 bytes: low nibbles one sub-block, high the next.
      const __m512i bits = _mm512_loadu_si512(x[i].qs + 64 * p);
      const __m512i lo = _mm512_and_si512(bits, m4), hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
      const __m512i q0 = lows(lo, hi), q1 = highs(lo, hi);
      const __m512i s0 = _mm512_permutexvar_epi16(idx[2 * p], sc16), s1 = _mm512_permutexvar_epi16(idx[2 * p + 1], sc16);
      for (int t = 0; t < NT; ++t) {
        const int8_t* q8 = y[t][i].qs + 128 * p;
        sumi[t] = add_scaled_dot(sumi[t], q0, q8, s0);
        sumi[t] = add_scaled_dot(sumi[t], q1, q8 + 64, s1);
      }
    }
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(y[t][i].d * dx), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]) - hsum(acc_m[t]);
}

template <int NT>
MOEBOX_TARGET_AVX512 void q6_K_avx512(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const block_q6_K*>(w);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(a[t]);
  const __m512i m4 = _mm512_set1_epi8(0xF), m2h = _mm512_set1_epi8(0x30);
  const __m512i idx[4] = {scale_index16(0), scale_index16(1), scale_index16(2), scale_index16(3)};
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float dx = _cvtsh_ss(x[i].d);
    const __m256i sc16_256 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales)));
    const __m512i sc16 = _mm512_castsi256_si512(sc16_256);
    // value = q - 32: dot the unsigned 6-bit q, subtract 32 * sum_k sc_k * bsums_k.
    __m512i sumi[NT], offset[NT];
    for (int t = 0; t < NT; ++t) {
      const __m256i corr = _mm256_madd_epi16(sc16_256, load256(y[t][i].bsums));
      offset[t] = _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5));
      sumi[t] = _mm512_setzero_si512();
    }
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(x[i].ql + 64 * h);  // bytes 0-31: ql[l], 32-63: ql[32+l]
      const __m256i qh = load256(x[i].qh + 32 * h);
      // bits 0-1 of each byte: the high bits of elements 128h + 0..63; bits 4-5: of 128h + 64..127
      const __m512i hb = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
      // elements 128h + 0..63 and 128h + 64..127, in order: low 4 bits | (high bits & 0x30)
      const __m512i q01 = _mm512_ternarylogic_epi64(_mm512_and_si512(ql, m4), _mm512_slli_epi16(hb, 4), m2h, 0xF8);
      const __m512i q23 = _mm512_ternarylogic_epi64(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), hb, m2h, 0xF8);
      const __m512i s01 = _mm512_permutexvar_epi16(idx[2 * h], sc16), s23 = _mm512_permutexvar_epi16(idx[2 * h + 1], sc16);
      for (int t = 0; t < NT; ++t) {
        const int8_t* q8 = y[t][i].qs + 128 * h;
        sumi[t] = add_scaled_dot(sumi[t], q01, q8, s01);
        sumi[t] = add_scaled_dot(sumi[t], q23, q8 + 64, s23);
      }
    }
    for (int t = 0; t < NT; ++t) {
      const __m512 dy = _mm512_set1_ps(y[t][i].d * dx);
      acc[t] = _mm512_fmadd_ps(dy, _mm512_cvtepi32_ps(_mm512_sub_epi32(sumi[t], offset[t])), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
}

}  // namespace

float vec_dot_q2_K_avx512(int64_t n, const void* w, const void* a) { return single_token<q2_K_avx512<1>>(n, w, a); }
float vec_dot_q4_K_avx512(int64_t n, const void* w, const void* a) { return single_token<q4_K_avx512<1>>(n, w, a); }
float vec_dot_q6_K_avx512(int64_t n, const void* w, const void* a) { return single_token<q6_K_avx512<1>>(n, w, a); }
void q2_K_avx512_multi(int64_t n, const void* w, const void* const* a, float* out) { q2_K_avx512<kMultiTokens>(n, w, a, out); }
void q4_K_avx512_multi(int64_t n, const void* w, const void* const* a, float* out) { q4_K_avx512<kMultiTokens>(n, w, a, out); }
void q6_K_avx512_multi(int64_t n, const void* w, const void* const* a, float* out) { q6_K_avx512<kMultiTokens>(n, w, a, out); }

}  // namespace moebox
