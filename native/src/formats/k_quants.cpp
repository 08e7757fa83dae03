// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: scalar reference dequantizers and AVX2 dot
// products against Q8_K activation blocks (integer sums per sub-block, one
// float multiply-add per super-block).
#include "k_quants.h"
#include "moebox/amx.h"

#include <immintrin.h>

#include "simd_avx2.h"

namespace moebox {
namespace {

// --- scalar reference (ggml's dequantize_row_*) ---
void dequant_q2_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q2_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    int is = 0;
    for (int h = 0; h < QK_K; h += 128) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {
          const uint8_t sc = x[i].scales[is++];
          const float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * ((q[l + 16 * part] >> shift) & 3) - ml;
        }
      }
      q += 32;
    }
  }
}

void dequant_q3_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q3_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    uint32_t aux[4];
    unpack_scales_q3_K(x[i].scales, aux);
    const auto* scales = reinterpret_cast<const int8_t*>(aux);
    const uint8_t* q = x[i].qs;
    const uint8_t* hm = x[i].hmask;
    uint8_t m = 1;
    int is = 0;
    for (int h = 0; h < QK_K; h += 128) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {
          const float dl = d * (scales[is++] - 32);
          for (int l = 16 * part; l < 16 * part + 16; ++l)
            *y++ = dl * (((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
        }
        m <<= 1;
      }
      q += 32;
    }
  }
}

void dequant_q4_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q4_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    uint32_t utmp[4];
    unpack_scales_mins_k4(x[i].scales, utmp);
    const auto* sc = reinterpret_cast<const uint8_t*>(utmp);
    const uint8_t* q = x[i].qs;
    for (int j = 0; j < QK_K / 64; ++j) {
      const float d1 = d * sc[2 * j], m1 = dmin * sc[8 + 2 * j];
      const float d2 = d * sc[2 * j + 1], m2 = dmin * sc[8 + 2 * j + 1];
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
    }
  }
}

void dequant_q5_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q5_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    uint32_t utmp[4];
    unpack_scales_mins_k4(x[i].scales, utmp);
    const auto* sc = reinterpret_cast<const uint8_t*>(utmp);
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < QK_K / 64; ++j) {
      const float d1 = d * sc[2 * j], m1 = dmin * sc[8 + 2 * j];
      const float d2 = d * sc[2 * j + 1], m2 = dmin * sc[8 + 2 * j + 1];
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}

void dequant_q6_K(const void* src, float* y, int64_t n) {
  const auto* x = static_cast<const block_q6_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int h = 0; h < QK_K; h += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

// --- AVX2 ---
using avx2::broadcast_epi16_shuffle;
using avx2::broadcast_epi16_shuffle2;

MOEBOX_TARGET_AVX2 inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Scales of 16 sub-blocks of 16 as int16 (sc16: [0..7 | 8..15]), split in two halves
// each duplicated to both 128-bit lanes.
MOEBOX_TARGET_AVX2 inline void split_scales16(__m256i sc16, __m256i out[2]) {
  out[0] = _mm256_permute4x64_epi64(sc16, 0x44);
  out[1] = _mm256_permute4x64_epi64(sc16, 0xEE);
}

// The kernels below keep the minimum term (Q2_K, Q4_K) in its own accumulator and
// convert a block's d and dmin with one instruction: a block's float work is a few
// instructions besides its 16 multiplies, which matters on 2-core machines where the
// dot product, not the memory, sets the GEMV speed.

// One weight row against NT activation rows: the weight unpacking and scale
// shuffles are shared by the tokens (prefill); NT = 1 is the plain dot product.
template <int NT>
MOEBOX_TARGET_AVX2 void q2_K_avx2(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const block_q2_K*>(w);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(a[t]);
  const __m256i m3 = _mm256_set1_epi8(3);
  __m256 acc[NT], acc_m[NT];
  for (int t = 0; t < NT; ++t) acc[t] = acc_m[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const __m128 dm = avx2::fp16x2(&x[i].d);
    const __m256 d = _mm256_broadcastss_ps(dm), dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    // scale byte k: low nibble the scale of sub-block k, high nibble its minimum
    const __m256i raw = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales)));
    const __m256i mins = _mm256_srli_epi16(raw, 4);
    __m256i scales[2];
    split_scales16(_mm256_and_si256(raw, _mm256_set1_epi16(0xF)), scales);
    __m256i sumi[NT];
    for (int t = 0; t < NT; ++t) {
      const __m256 yd = _mm256_broadcast_ss(&y[t][i].d);
      const __m256i prod_m = _mm256_madd_epi16(mins, load256(y[t][i].bsums));
      acc_m[t] = _mm256_fmadd_ps(_mm256_mul_ps(dmin, yd), _mm256_cvtepi32_ps(prod_m), acc_m[t]);
      sumi[t] = _mm256_setzero_si256();
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i bits = load256(x[i].qs + 32 * h);
      for (int s = 0; s < 4; ++s) {
        const __m256i q = _mm256_and_si256(s ? _mm256_srli_epi16(bits, 2 * s) : bits, m3);
        const __m256i sc = _mm256_shuffle_epi8(scales[h], broadcast_epi16_shuffle2(2 * s, 2 * s + 1));
        for (int t = 0; t < NT; ++t) {
          const __m256i p = _mm256_maddubs_epi16(q, load256(y[t][i].qs + 128 * h + 32 * s));
          sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(sc, p));
        }
      }
    }
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_broadcast_ss(&y[t][i].d)), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = avx2::hsum(_mm256_sub_ps(acc[t], acc_m[t]));
}

// The 16 signed 6-bit Q3_K scales (minus 32) as bytes, without a trip through
// memory (scalar stores followed by a vector load stall store forwarding).
MOEBOX_TARGET_AVX2 inline __m128i q3_K_scales(const uint8_t* packed) {
  const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed));  // bytes 0-7: low 4 bits
  uint32_t h;
  std::memcpy(&h, packed + 8, 4);  // bytes 8-11: high 2 bits
  const __m128i m4 = _mm_set1_epi8(0xF);
  const __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(v, m4), _mm_and_si128(_mm_srli_epi16(v, 4), m4));
  const __m128i hi = _mm_and_si128(_mm_set_epi32(static_cast<int>(h >> 6), static_cast<int>(h >> 4),
                                                 static_cast<int>(h >> 2), static_cast<int>(h)),
                                   _mm_set1_epi8(3));
  return _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
}

// value = (q + 4 * hbit) - 4: the unsigned part is dotted, 4 * sum_k sc_k * bsums_k subtracted.
template <int NT>
MOEBOX_TARGET_AVX2 void q3_K_avx2(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const block_q3_K*>(w);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(a[t]);
  const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float dx = avx2::fp16(x[i].d);
    const __m128i sc8 = q3_K_scales(x[i].scales);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    __m256i scales[2];
    split_scales16(sc16, scales);
    __m256i sumi[NT];
    for (int t = 0; t < NT; ++t)
      sumi[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(y[t][i].bsums)), 2));
    const __m256i hm = load256(x[i].hmask);
    for (int h = 0; h < 2; ++h) {
      const __m256i bits = load256(x[i].qs + 32 * h);
      for (int s = 0; s < 4; ++s) {
        const int bit = 4 * h + s;  // hmask bit of these 32 elements, moved to bit 2
        const __m256i hb = bit >= 2 ? _mm256_srli_epi16(hm, bit - 2) : _mm256_slli_epi16(hm, 2 - bit);
        const __m256i q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * s), m3), _mm256_and_si256(hb, m4));
        const __m256i sc = _mm256_shuffle_epi8(scales[h], broadcast_epi16_shuffle2(2 * s, 2 * s + 1));
        for (int t = 0; t < NT; ++t) {
          const __m256i p = _mm256_maddubs_epi16(q, load256(y[t][i].qs + 128 * h + 32 * s));
          sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(sc, p));
        }
      }
    }
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(y[t][i].d * dx), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = avx2::hsum(acc[t]);
}

// Q4_K/Q5_K minimum term: sum over 8 sub-blocks of mins[k] * (sum of the sub-block's q8).
MOEBOX_TARGET_AVX2 inline __m128i mins_dot_bsums(__m256i mins_and_scales, const int16_t* bsums) {
  const __m256i q8sums = load256(bsums);
  const __m128i q8s = _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
  return _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
}

template <int NT>
MOEBOX_TARGET_AVX2 void q4_K_avx2(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const block_q4_K*>(w);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(a[t]);
  const __m256i m4 = _mm256_set1_epi8(0xF);
  __m256 acc[NT], acc_m[NT];
  for (int t = 0; t < NT; ++t) acc[t] = acc_m[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const __m128 dm = avx2::fp16x2(&x[i].d);
    const __m256 d = _mm256_broadcastss_ps(dm), dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    const __m128i sm = avx2::scales_mins_k4(x[i].scales);  // bytes: 8 scales, 8 mins
    const __m256i scales = _mm256_cvtepu8_epi16(_mm_unpacklo_epi64(sm, sm));
    const __m256i mins = avx2::mins_k4_per_bsum(sm);
    __m256i sumi[NT];
    for (int t = 0; t < NT; ++t) {
      const __m256 yd = _mm256_broadcast_ss(&y[t][i].d);
      const __m256i prod_m = _mm256_madd_epi16(mins, load256(y[t][i].bsums));
      acc_m[t] = _mm256_fmadd_ps(_mm256_mul_ps(dmin, yd), _mm256_cvtepi32_ps(prod_m), acc_m[t]);
      sumi[t] = _mm256_setzero_si256();
    }
    for (int j = 0; j < QK_K / 64; ++j) {
      const __m256i bits = load256(x[i].qs + 32 * j);
      const __m256i lo = _mm256_and_si256(bits, m4), hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
      const __m256i sl = _mm256_shuffle_epi8(scales, broadcast_epi16_shuffle(2 * j));
      const __m256i sh = _mm256_shuffle_epi8(scales, broadcast_epi16_shuffle(2 * j + 1));
      for (int t = 0; t < NT; ++t) {
        const int8_t* q8 = y[t][i].qs + 64 * j;
        const __m256i pl = _mm256_madd_epi16(sl, _mm256_maddubs_epi16(lo, load256(q8)));
        const __m256i ph = _mm256_madd_epi16(sh, _mm256_maddubs_epi16(hi, load256(q8 + 32)));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(pl, ph));
      }
    }
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_broadcast_ss(&y[t][i].d)), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = avx2::hsum(_mm256_sub_ps(acc[t], acc_m[t]));
}

MOEBOX_TARGET_AVX2 float vec_dot_q5_K_avx2(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const block_q5_K*>(w);
  const auto* y = static_cast<const block_q8_K*>(a);
  const __m256i m4 = _mm256_set1_epi8(0xF), mone = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  __m128 acc_m = _mm_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = y[i].d * avx2::fp16(x[i].d), dmin = -y[i].d * avx2::fp16(x[i].dmin);
    const __m256i mins_and_scales = _mm256_cvtepu8_epi16(avx2::scales_mins_k4(x[i].scales));
    acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mins_dot_bsums(mins_and_scales, y[i].bsums)), acc_m);
    const __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
    const __m256i scales = _mm256_set_m128i(sc128, sc128);
    const __m256i hbits = load256(x[i].qh);
    const uint8_t* q5 = x[i].qs;
    const int8_t* q8 = y[i].qs;
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < QK_K / 64; ++j) {
      const __m256i bits = load256(q5);
      q5 += 32;
      const int b0 = 2 * j, b1 = 2 * j + 1;
      const __m256i h0 = _mm256_slli_epi16(_mm256_srli_epi16(_mm256_and_si256(hbits, _mm256_slli_epi16(mone, b0)), b0), 4);
      const __m256i h1 = _mm256_slli_epi16(_mm256_srli_epi16(_mm256_and_si256(hbits, _mm256_slli_epi16(mone, b1)), b1), 4);
      const __m256i lo = _mm256_add_epi8(_mm256_and_si256(bits, m4), h0);
      const __m256i hi = _mm256_add_epi8(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h1);
      __m256i pl = _mm256_maddubs_epi16(lo, load256(q8));
      __m256i ph = _mm256_maddubs_epi16(hi, load256(q8 + 32));
      q8 += 64;
      pl = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcast_epi16_shuffle(2 * j)), pl);
      ph = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, broadcast_epi16_shuffle(2 * j + 1)), ph);
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return avx2::hsum(acc) + avx2::hsum(acc_m);
}

// value = q - 32: the unsigned 6-bit q is dotted, 32 * sum_k sc_k * bsums_k subtracted
// once per block (instead of a second vpmaddubsw per 32 elements).
template <int NT>
MOEBOX_TARGET_AVX2 void q6_K_avx2(int64_t n, const void* w, const void* const* a, float* out) {
  const auto* x = static_cast<const block_q6_K*>(w);
  const block_q8_K* y[NT];
  for (int t = 0; t < NT; ++t) y[t] = static_cast<const block_q8_K*>(a[t]);
  const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3), m2h = _mm256_set1_epi8(0x30);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const __m256 dx = _mm256_set1_ps(avx2::fp16(x[i].d));
    // 16 int8 scales widened to int16, halves duplicated per 128-bit lane like Q2_K.
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales)));
    __m256i scales[2];
    split_scales16(sc16, scales);
    __m256i sumi[NT], offset[NT];
    for (int t = 0; t < NT; ++t) {
      offset[t] = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load256(y[t][i].bsums)), 5);
      sumi[t] = _mm256_setzero_si256();
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i bits1 = load256(x[i].ql + 64 * h), bits2 = load256(x[i].ql + 64 * h + 32);
      const __m256i bitsh = load256(x[i].qh + 32 * h);  // 2 high bits of 4 elements per byte
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(bits1, m4), _mm256_slli_epi16(_mm256_and_si256(bitsh, m2), 4));
      q[1] = _mm256_or_si256(_mm256_and_si256(bits2, m4), _mm256_and_si256(_mm256_slli_epi16(bitsh, 2), m2h));
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m4), _mm256_and_si256(bitsh, m2h));
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m4),
                             _mm256_and_si256(_mm256_srli_epi16(bitsh, 2), m2h));
      for (int s = 0; s < 4; ++s) {
        const __m256i sc = _mm256_shuffle_epi8(scales[h], broadcast_epi16_shuffle2(2 * s, 2 * s + 1));
        for (int t = 0; t < NT; ++t) {
          const __m256i p = _mm256_maddubs_epi16(q[s], load256(y[t][i].qs + 128 * h + 32 * s));
          sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(sc, p));
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      const __m256 dy = _mm256_mul_ps(dx, _mm256_broadcast_ss(&y[t][i].d));
      acc[t] = _mm256_fmadd_ps(dy, _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], offset[t])), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = avx2::hsum(acc[t]);
}

const auto vec_dot_q2_K_avx2 = single_token<q2_K_avx2<1>>;
const auto vec_dot_q3_K_avx2 = single_token<q3_K_avx2<1>>;
const auto vec_dot_q4_K_avx2 = single_token<q4_K_avx2<1>>;
const auto vec_dot_q6_K_avx2 = single_token<q6_K_avx2<1>>;

}  // namespace

#define MOEBOX_KQUANT(NAME, BLOCK, LOWER, AVX512, MULTI_AVX2, MULTI_AVX512, AMX)                \
  extern const FormatOps kFormat##NAME = {                                                      \
      #NAME,                                                                                    \
      GgmlType::NAME,                                                                           \
      QK_K,                                                                                     \
      sizeof(BLOCK),                                                                            \
      GgmlType::Q8_K,                                                                           \
      dequant_##LOWER,                                                                          \
      {vec_dot_ref<dequant_##LOWER, QK_K, sizeof(BLOCK), GgmlType::Q8_K>, vec_dot_##LOWER##_avx2, \
       AVX512, nullptr},                                                                        \
      {nullptr, MULTI_AVX2, MULTI_AVX512, nullptr},                                             \
      AMX};
MOEBOX_KQUANT(Q2_K, block_q2_K, q2_K, vec_dot_q2_K_avx512, q2_K_avx2<kMultiTokens>, q2_K_avx512_multi, gemm_q2_K_amx)
MOEBOX_KQUANT(Q3_K, block_q3_K, q3_K, vec_dot_q3_K_avx512, q3_K_avx2<kMultiTokens>, q3_K_avx512_multi, gemm_q3_K_amx)
MOEBOX_KQUANT(Q4_K, block_q4_K, q4_K, vec_dot_q4_K_avx512, q4_K_avx2<kMultiTokens>, q4_K_avx512_multi, gemm_q4_K_amx)
MOEBOX_KQUANT(Q5_K, block_q5_K, q5_K, nullptr, nullptr, nullptr, nullptr)
MOEBOX_KQUANT(Q6_K, block_q6_K, q6_K, vec_dot_q6_K_avx512, q6_K_avx2<kMultiTokens>, q6_K_avx512_multi, gemm_q6_K_amx)
#undef MOEBOX_KQUANT

}  // namespace moebox
