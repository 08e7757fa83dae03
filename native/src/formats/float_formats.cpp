// F32, F16 and BF16 weights: dotted with plain f32 activation rows.
#include <immintrin.h>

#include "moebox/formats.h"
#include "simd_avx2.h"

namespace moebox {
namespace {

// --- scalar reference ---
void dequant_f32(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

void dequant_f16(const void* src, float* dst, int64_t n) {
  const auto* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(s[i]);
}

void dequant_bf16(const void* src, float* dst, int64_t n) {
  const auto* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
}

float vec_dot_f32_scalar(int64_t n, const void* w, const void* x) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(static_cast<const float*>(w)[i]) * static_cast<const float*>(x)[i];
  return static_cast<float>(s);
}

float vec_dot_f16_scalar(int64_t n, const void* w, const void* x) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    s += static_cast<double>(fp16_to_f32(static_cast<const uint16_t*>(w)[i])) * static_cast<const float*>(x)[i];
  return static_cast<float>(s);
}

float vec_dot_bf16_scalar(int64_t n, const void* w, const void* x) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    s += static_cast<double>(bf16_to_f32(static_cast<const uint16_t*>(w)[i])) * static_cast<const float*>(x)[i];
  return static_cast<float>(s);
}

// --- AVX2: 4 independent accumulators of 8 lanes hide the FMA latency ---
struct F32Weights {
  MOEBOX_TARGET_AVX2 static __m256 load8(const void* w, int64_t i) { return _mm256_loadu_ps(static_cast<const float*>(w) + i); }
  static float at(const void* w, int64_t i) { return static_cast<const float*>(w)[i]; }
};
struct F16Weights {
  MOEBOX_TARGET_AVX2 static __m256 load8(const void* w, int64_t i) { return avx2::load_fp16x8(static_cast<const uint16_t*>(w) + i); }
  static float at(const void* w, int64_t i) { return fp16_to_f32(static_cast<const uint16_t*>(w)[i]); }
};
struct BF16Weights {
  MOEBOX_TARGET_AVX2 static __m256 load8(const void* w, int64_t i) { return avx2::load_bf16x8(static_cast<const uint16_t*>(w) + i); }
  static float at(const void* w, int64_t i) { return bf16_to_f32(static_cast<const uint16_t*>(w)[i]); }
};

template <typename W>
MOEBOX_TARGET_AVX2 float vec_dot_float_avx2(int64_t n, const void* w, const void* xv) {
  const auto* x = static_cast<const float*>(xv);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int k = 0; k < 4; ++k) acc[k] = _mm256_fmadd_ps(W::load8(w, i + 8 * k), _mm256_loadu_ps(x + i + 8 * k), acc[k]);
  for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(W::load8(w, i), _mm256_loadu_ps(x + i), acc[0]);
  float s = avx2::hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  for (; i < n; ++i) s += W::at(w, i) * x[i];
  return s;
}

}  // namespace

extern const FormatOps kFormatF32 = {"F32", GgmlType::F32, 1, 4, GgmlType::F32, dequant_f32,
                                     {vec_dot_f32_scalar, vec_dot_float_avx2<F32Weights>, nullptr, nullptr}};
extern const FormatOps kFormatF16 = {"F16", GgmlType::F16, 1, 2, GgmlType::F32, dequant_f16,
                                     {vec_dot_f16_scalar, vec_dot_float_avx2<F16Weights>, nullptr, nullptr}};
extern const FormatOps kFormatBF16 = {"BF16", GgmlType::BF16, 1, 2, GgmlType::F32, dequant_bf16,
                                      {vec_dot_bf16_scalar, vec_dot_float_avx2<BF16Weights>, nullptr, nullptr}};

}  // namespace moebox
