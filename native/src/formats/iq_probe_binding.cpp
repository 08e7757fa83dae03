// Temporary Python probe of the IQ kernels (dequantize, vec_dot per ISA) until
// the main module's binding exposes them through the format table.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "moebox/formats.h"
#include "moebox/quants_iq.h"

namespace nb = nanobind;
using namespace moebox;

namespace moebox {
extern const FormatOps kFormatIQ1_S, kFormatIQ1_M, kFormatIQ2_XXS, kFormatIQ2_XS, kFormatIQ2_S, kFormatIQ3_XXS,
    kFormatIQ3_S, kFormatIQ4_NL, kFormatIQ4_XS;
}

namespace {

const FormatOps* const kIq[] = {&kFormatIQ1_S,   &kFormatIQ1_M, &kFormatIQ2_XXS, &kFormatIQ2_XS, &kFormatIQ2_S,
                                &kFormatIQ3_XXS, &kFormatIQ3_S, &kFormatIQ4_NL,  &kFormatIQ4_XS};

const FormatOps& fmt(int type) {
  for (const FormatOps* f : kIq)
    if (static_cast<int>(f->type) == type) return *f;
  throw std::invalid_argument("not an IQ type: " + std::to_string(type));
}

int nearest_int(float f) { return static_cast<int>(std::nearbyint(f)); }

// ggml's quantize_row_q8_K_ref.
std::vector<block_q8_K> quantize_q8_K(const float* x, int64_t n) {
  std::vector<block_q8_K> y(n / QK_K);
  for (auto& b : y) {
    float amax = 0, max = 0;
    for (int j = 0; j < QK_K; ++j)
      if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
    if (amax == 0) {
      b = {};
      x += QK_K;
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < QK_K; ++j) b.qs[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
    for (int j = 0; j < QK_K / 16; ++j) {
      int s = 0;
      for (int k = 0; k < 16; ++k) s += b.qs[16 * j + k];
      b.bsums[j] = static_cast<int16_t>(s);
    }
    b.d = 1 / iscale;
    x += QK_K;
  }
  return y;
}

// ggml's quantize_row_q8_0_ref.
std::vector<block_q8_0> quantize_q8_0(const float* x, int64_t n) {
  std::vector<block_q8_0> y(n / QK8_0);
  for (auto& b : y) {
    float amax = 0;
    for (int j = 0; j < QK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f;
    const float id = d ? 1.f / d : 0.f;
    b.d = f32_to_fp16(d);
    for (int j = 0; j < QK8_0; ++j) b.qs[j] = static_cast<int8_t>(std::lround(x[j] * id));
    x += QK8_0;
  }
  return y;
}

using U8 = nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using F32 = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

float dot(const U8& w, int type, const F32& x, int isa, bool reference) {
  const FormatOps& f = fmt(type);
  const int64_t n = static_cast<int64_t>(x.shape(0));
  if (n % f.block_elems || static_cast<int64_t>(w.shape(0)) != row_bytes(f, n)) throw std::invalid_argument("bad sizes");
  const void* act;
  std::vector<block_q8_K> a8k;
  std::vector<block_q8_0> a80;
  if (f.vec_dot_type == GgmlType::Q8_K) {
    a8k = quantize_q8_K(x.data(), n);
    act = a8k.data();
  } else {
    a80 = quantize_q8_0(x.data(), n);
    act = a80.data();
  }
  if (reference) {
    // dequantized weights x quantized activations, in double
    std::vector<float> wf(n);
    f.dequant_f32(w.data(), wf.data(), n);
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(wf[i]) * act_value(f.vec_dot_type, act, i);
    return static_cast<float>(s);
  }
  if (isa < 0 || isa >= kIsaCount) throw std::invalid_argument("no such ISA");
  while (!f.vec_dot[isa]) --isa;  // the nearest lower ISA, as the format table does
  return f.vec_dot[isa](n, w.data(), act);
}

}  // namespace

NB_MODULE(moebox_iq_probe, m) {
  m.def("dequantize", [](const U8& data, int type) {
    const FormatOps& f = fmt(type);
    const int64_t n = static_cast<int64_t>(data.shape(0)) / f.block_bytes * f.block_elems;
    auto* buf = new float[n];
    nb::capsule owner(buf, [](void* p) noexcept { delete[] static_cast<float*>(p); });
    f.dequant_f32(data.data(), buf, n);
    return nb::ndarray<nb::numpy, float>(buf, {static_cast<size_t>(n)}, owner);
  });
  m.def("vec_dot", [](const U8& w, int type, const F32& x, int isa) { return dot(w, type, x, isa, false); });
  // Seconds per vec_dot call over the whole row (activations quantized once).
  m.def("time_vec_dot", [](const U8& w, int type, const F32& x, int isa, int reps) {
    const FormatOps& f = fmt(type);
    const int64_t n = static_cast<int64_t>(x.shape(0));
    std::vector<block_q8_K> a8k;
    std::vector<block_q8_0> a80;
    const void* act;
    if (f.vec_dot_type == GgmlType::Q8_K) {
      a8k = quantize_q8_K(x.data(), n);
      act = a8k.data();
    } else {
      a80 = quantize_q8_0(x.data(), n);
      act = a80.data();
    }
    volatile float sink = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (!f.vec_dot[isa]) --isa;
    for (int r = 0; r < reps; ++r) sink = sink + f.vec_dot[isa](n, w.data(), act);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  });
  m.def("vec_dot_ref", [](const U8& w, int type, const F32& x) { return dot(w, type, x, 0, true); });
}
