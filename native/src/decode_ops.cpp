// Fused per-token operations of a decoder layer (see moebox/decode_ops.h).
#include "moebox/decode_ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "formats/simd_avx2.h"

namespace moebox {
namespace {

// exp(x) for 8 floats: Cephes' expf (range reduction by ln 2, degree-6 polynomial), within
// 2 ulp of expf over [-87, 88]; below -87 it returns ~1e-38 instead of a subnormal or 0.
MOEBOX_TARGET_AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.3762626647949f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

float exp1(float x) {  // the scalar twin of exp8 for loop tails
  return std::exp(std::min(std::max(x, -87.0f), 88.3762626647949f));
}

MOEBOX_TARGET_AVX2 void rms_norm_avx2(const float* x, const float* w, float eps, float* y, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  float ss = avx2::hsum(acc);
  for (; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  const __m256 s = _mm256_set1_ps(scale);
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), s), _mm256_loadu_ps(w + i)));
  for (; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void rms_norm_scalar(const float* x, const float* w, float eps, float* y, int64_t n) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

MOEBOX_TARGET_AVX2 void silu_mul_avx2(const float* g, const float* u, float* y, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 e = exp8(_mm256_xor_ps(gv, sign));  // exp(-g)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) y[i] = g[i] / (1.0f + exp1(-g[i])) * u[i];
}

void silu_mul_scalar(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

// --- attention of one query ---
template <bool Fp16>
MOEBOX_TARGET_AVX2 inline __m256 load8(const void* p, int64_t i) {
  if constexpr (Fp16)
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  else
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
}

template <bool Fp16>
inline float load1(const void* p, int64_t i) {
  if constexpr (Fp16)
    return fp16_to_f32(static_cast<const uint16_t*>(p)[i]);
  else
    return static_cast<const float*>(p)[i];
}

// One head: q [dim] against k, v rows of its kv head (element offsets: s * stride + off).
template <bool Fp16>
MOEBOX_TARGET_AVX2 void attend_head_avx2(const float* q, int64_t dim, const void* k, int64_t k_stride, const void* v,
                                         int64_t v_stride, int64_t off, int64_t len, float scale, float* scores,
                                         float* out) {
  float mx = -INFINITY;
  const bool vec = dim % 8 == 0;
  int64_t s0 = 0;
  if (vec) {
    // 8 positions at a time: their 8 dot products reduce into one vector by a transpose of hadds
    // (9 instructions) instead of 8 horizontal sums (40).
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (; s0 + 8 <= len; s0 += 8) {
      __m256 acc[8];
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
      for (int64_t i = 0; i < dim; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        for (int j = 0; j < 8; ++j)
          acc[j] = _mm256_fmadd_ps(qv, load8<Fp16>(k, (s0 + j) * k_stride + off + i), acc[j]);
      }
      const __m256 t0 = _mm256_hadd_ps(acc[0], acc[1]), t1 = _mm256_hadd_ps(acc[2], acc[3]);
      const __m256 t2 = _mm256_hadd_ps(acc[4], acc[5]), t3 = _mm256_hadd_ps(acc[6], acc[7]);
      const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
      // u0 = [p0 p1 p2 p3 | p0 p1 p2 p3] partial sums of the low and high 128-bit halves; u1 for p4..p7
      const __m256 dots = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
      const __m256 sc = _mm256_mul_ps(dots, _mm256_set1_ps(scale));
      _mm256_storeu_ps(scores + s0, sc);
      vmax = _mm256_max_ps(vmax, sc);
    }
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(vmax, 1), _mm256_castps256_ps128(vmax));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    mx = _mm_cvtss_f32(m4);
  }
  for (int64_t s = s0; s < len; ++s) {
    float dot;
    if (vec) {
      __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
      const int64_t base = s * k_stride + off;
      int64_t i = 0;
      for (; i + 16 <= dim; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8<Fp16>(k, base + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), load8<Fp16>(k, base + i + 8), acc1);
      }
      if (i < dim) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8<Fp16>(k, base + i), acc0);
      dot = avx2::hsum(_mm256_add_ps(acc0, acc1));
    } else {
      dot = 0.f;
      for (int64_t i = 0; i < dim; ++i) dot += q[i] * load1<Fp16>(k, s * k_stride + off + i);
    }
    scores[s] = dot * scale;
    mx = std::max(mx, scores[s]);
  }
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 vsum = _mm256_setzero_ps();
  int64_t s = 0;
  for (; s + 8 <= len; s += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + s), vmx));
    _mm256_storeu_ps(scores + s, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = avx2::hsum(vsum);
  for (; s < len; ++s) sum += (scores[s] = exp1(scores[s] - mx));
  const float inv = 1.0f / sum;
  if (vec) {
    // 64 output values (8 registers) at a time, positions in the inner loop: 8 independent chains
    for (int64_t i0 = 0; i0 < dim; i0 += 64) {
      const int64_t nreg = std::min<int64_t>(8, (dim - i0) / 8);
      __m256 acc[8];
      for (int r = 0; r < 8; ++r) acc[r] = _mm256_setzero_ps();
      for (s = 0; s < len; ++s) {
        const __m256 p = _mm256_set1_ps(scores[s]);
        const int64_t base = s * v_stride + off + i0;
        if (nreg == 8) {
          for (int r = 0; r < 8; ++r) acc[r] = _mm256_fmadd_ps(p, load8<Fp16>(v, base + 8 * r), acc[r]);
        } else {
          for (int r = 0; r < nreg; ++r) acc[r] = _mm256_fmadd_ps(p, load8<Fp16>(v, base + 8 * r), acc[r]);
        }
      }
      for (int r = 0; r < nreg; ++r) _mm256_storeu_ps(out + i0 + 8 * r, _mm256_mul_ps(acc[r], _mm256_set1_ps(inv)));
    }
  } else {
    for (int64_t i = 0; i < dim; ++i) {
      float acc = 0.f;
      for (s = 0; s < len; ++s) acc += scores[s] * load1<Fp16>(v, s * v_stride + off + i);
      out[i] = acc * inv;
    }
  }
}

template <bool Fp16>
void attend_head_scalar(const float* q, int64_t dim, const void* k, int64_t k_stride, const void* v, int64_t v_stride,
                        int64_t off, int64_t len, float scale, float* scores, float* out) {
  float mx = -INFINITY;
  for (int64_t s = 0; s < len; ++s) {
    double dot = 0.0;
    for (int64_t i = 0; i < dim; ++i) dot += static_cast<double>(q[i]) * load1<Fp16>(k, s * k_stride + off + i);
    scores[s] = static_cast<float>(dot) * scale;
    mx = std::max(mx, scores[s]);
  }
  double sum = 0.0;
  for (int64_t s = 0; s < len; ++s) sum += (scores[s] = std::exp(scores[s] - mx));
  for (int64_t i = 0; i < dim; ++i) {
    double acc = 0.0;
    for (int64_t s = 0; s < len; ++s) acc += static_cast<double>(scores[s]) * load1<Fp16>(v, s * v_stride + off + i);
    out[i] = static_cast<float>(acc / sum);
  }
}

// Below this many multiply-adds per call the heads run on the calling thread alone.
constexpr int64_t kParallelAttendWork = 1 << 15;

}  // namespace

void rms_norm(const float* x, int64_t x_stride, const float* w, float eps, float* y, int64_t y_stride, int64_t rows,
              int64_t n, Isa isa) {
  for (int64_t t = 0; t < rows; ++t) {
    if (isa >= kIsaAvx2)
      rms_norm_avx2(x + t * x_stride, w, eps, y + t * y_stride, n);
    else
      rms_norm_scalar(x + t * x_stride, w, eps, y + t * y_stride, n);
  }
}

void silu_mul(const float* gate_up, int64_t gate_up_stride, float* y, int64_t rows, int64_t n, Isa isa) {
  for (int64_t t = 0; t < rows; ++t) {
    const float* g = gate_up + t * gate_up_stride;
    if (isa >= kIsaAvx2)
      silu_mul_avx2(g, g + n, y + t * n, n);
    else
      silu_mul_scalar(g, g + n, y + t * n, n);
  }
}

void rope_inplace(float* x, int64_t tokens, int64_t heads, int64_t dim, int64_t token_stride, int64_t head_stride,
                  const float* cos, const float* sin, const int64_t* pos, bool interleaved) {
  const int64_t half = dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* c = cos + pos[t] * half;
    const float* s = sin + pos[t] * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* r = x + t * token_stride + h * head_stride;
      if (interleaved) {
        for (int64_t i = 0; i < half; ++i) {
          const float a = r[2 * i], b = r[2 * i + 1];
          r[2 * i] = a * c[i] - b * s[i];
          r[2 * i + 1] = a * s[i] + b * c[i];
        }
      } else {
        for (int64_t i = 0; i < half; ++i) {
          const float a = r[i], b = r[i + half];
          r[i] = a * c[i] - b * s[i];
          r[i + half] = a * s[i] + b * c[i];
        }
      }
    }
  }
}

void attend_one(const float* q, int64_t heads, int64_t kv_heads, int64_t dim, const void* k, int64_t k_stride,
                const void* v, int64_t v_stride, bool kv_fp16, int64_t len, float scale, float* out, ThreadPool& pool,
                Isa isa) {
  const int64_t rep = heads / kv_heads;
  auto head = [&](int64_t h, int) {
    thread_local std::vector<float> scores;
    if (static_cast<int64_t>(scores.size()) < len) scores.resize(static_cast<size_t>(len));
    const int64_t off = (h / rep) * dim;
    const float* qh = q + h * dim;
    float* oh = out + h * dim;
    if (isa >= kIsaAvx2) {
      if (kv_fp16)
        attend_head_avx2<true>(qh, dim, k, k_stride, v, v_stride, off, len, scale, scores.data(), oh);
      else
        attend_head_avx2<false>(qh, dim, k, k_stride, v, v_stride, off, len, scale, scores.data(), oh);
    } else {
      if (kv_fp16)
        attend_head_scalar<true>(qh, dim, k, k_stride, v, v_stride, off, len, scale, scores.data(), oh);
      else
        attend_head_scalar<false>(qh, dim, k, k_stride, v, v_stride, off, len, scale, scores.data(), oh);
    }
  };
  if (heads * len * dim < kParallelAttendWork) {
    for (int64_t h = 0; h < heads; ++h) head(h, 0);
  } else {
    pool.parallel_for(heads, head);
  }
}

namespace {

MOEBOX_TARGET_AVX2 void store_fp16_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) y[i] = avx2::to_fp16(x[i]);
}

void store_cache_row(const float* x, void* cache, int64_t row, int64_t n, bool fp16, Isa isa) {
  if (!fp16) {
    std::memcpy(static_cast<float*>(cache) + row * n, x, static_cast<size_t>(n) * sizeof(float));
  } else if (isa >= kIsaAvx2) {
    store_fp16_avx2(x, static_cast<uint16_t*>(cache) + row * n, n);
  } else {
    auto* y = static_cast<uint16_t*>(cache) + row * n;
    for (int64_t i = 0; i < n; ++i) y[i] = f32_to_fp16(x[i]);
  }
}

}  // namespace

void rope_cache_attend(float* qkv, int64_t heads, int64_t kv_heads, int64_t dim, const float* cos, const float* sin,
                       int64_t pos, bool interleaved, void* k_cache, void* v_cache, bool kv_fp16, int64_t len,
                       float scale, float* out, ThreadPool& pool, Isa isa) {
  const int64_t row = (heads + 2 * kv_heads) * dim;
  rope_inplace(qkv, 1, heads + kv_heads, dim, row, dim, cos, sin, &pos, interleaved);
  store_cache_row(qkv + heads * dim, k_cache, len, kv_heads * dim, kv_fp16, isa);
  store_cache_row(qkv + (heads + kv_heads) * dim, v_cache, len, kv_heads * dim, kv_fp16, isa);
  attend_one(qkv, heads, kv_heads, dim, k_cache, kv_heads * dim, v_cache, kv_heads * dim, kv_fp16, len + 1, scale, out,
             pool, isa);
}

}  // namespace moebox
