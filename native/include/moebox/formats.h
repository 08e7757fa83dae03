// Weight formats of GGUF tensors and the activation blocks they are dotted with.
//
// Every weight format is described by one FormatOps entry: its block geometry,
// the activation type its dot product consumes (vec_dot_type), a reference
// dequantizer and one vec_dot per ISA. Matmul and the MoE experts only ever go
// through this table, so a format is supported everywhere once it is listed.
//
// How to add a format (e.g. IQ2_XXS):
//   1. Write native/src/formats/<family>.h with the block struct(s), byte layout
//      spelled out, and native/src/formats/<family>.cpp defining
//          extern const FormatOps kFormatIQ2_XXS = {
//              "IQ2_XXS", GgmlType::IQ2_XXS, 256, sizeof(block_iq2_xxs), GgmlType::Q8_K,
//              dequant_row_iq2_xxs,
//              {vec_dot_ref<dequant_row_iq2_xxs, 256, sizeof(block_iq2_xxs), GgmlType::Q8_K>,
//               vec_dot_iq2_xxs_avx2, nullptr, nullptr}};
//      CMake picks up every native/src/formats/*.cpp by itself.
//   2. Add one line X(IQ2_XXS) to MOEBOX_FORMAT_LIST in native/src/formats/registry.cpp.
//   The scalar slot must be filled (vec_dot_ref gives it for free from the
//   dequantizer); ISA slots left nullptr fall back to the best lower ISA.
//   Optionally a format adds vec_dot_multi kernels (one weight row against
//   kMultiTokens activation rows, for prefill) as a last initializer
//   {nullptr, avx2_multi, avx512_multi, nullptr}; they must return bitwise the
//   results of the vec_dot of the same ISA (tests check this). Likewise an optional
//   vec_dot_pair (two weight rows against one activation row, for decode) as the
//   initializer after amx_gemm; the same bitwise rule holds.
//   A Q8_K format may add an AMX tile kernel (amx_gemm, see moebox/amx.h) after
//   them; matmul and the MoE experts use it for batches of at least
//   kAmxMinTokens tokens at the AMX level (decode stays on the vec_dot).
//   ISA variants are plain functions marked MOEBOX_TARGET_AVX2 / MOEBOX_TARGET_AVX512
//   (never a -march flag for the build machine: one binary serves every x86-64 CPU).
//   Tests: tests/native/quant_blocks.py lists the formats the tests check against
//   gguf.quants.dequantize (FP16_SCALE_OFFSETS: where the fp16 scales of a block
//   are, so random blocks get sane scales); add the new format there.
//
// Activation types (vec_dot_type):
//   Q8_K  - block_q8_K, 256 values: every 256-element format (k-quants and IQ*).
//   Q8_0  - block_q8_0, 32 values: the 32-element formats (Q4_0, Q5_0, Q8_0, IQ4_NL).
//   Q8_1  - block_q8_1, 32 values with their scaled sum: Q4_1, Q5_1.
//   F32   - plain float rows: F32, F16, BF16 weights.
// Activation rows are quantized once per matmul / MoE call (quantize_act_row).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace moebox {

// Same numbers as ggml's ggml_type and gguf's GGMLQuantizationType.
enum class GgmlType : int {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
};

// Instruction-set levels, lowest first. A higher level implies the lower ones.
enum Isa : int {
  kIsaScalar = 0,
  kIsaAvx2 = 1,    // AVX2 + FMA + F16C
  kIsaAvx512 = 2,  // AVX-512 F/BW/VL/DQ + VNNI
  kIsaAmx = 3,     // AMX tiles (int8/bf16), on top of AVX-512
  kIsaCount = 4,
};

#ifndef MOEBOX_TARGET_AVX2
#define MOEBOX_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))
#define MOEBOX_TARGET_AVX512 \
  __attribute__((target("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512vl,avx512vnni")))
// AMX tile kernels also use AVX-512 for what happens around the tiles.
#define MOEBOX_TARGET_AMX                                                                        \
  __attribute__((target("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8," \
                        "amx-bf16")))
#endif

constexpr int QK_K = 256;  // elements per k-quant / IQ super-block
constexpr int QK8_0 = 32;  // elements per legacy block

// Activation block for 32-element formats (ggml's block_q8_0): x[i] = d * qs[i].
struct block_q8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");

// Activation block for the 32-element formats with a per-block minimum (Q4_1, Q5_1),
// after ggml's block_q8_1: x[i] = d * qs[i], and s = d * sum(qs) so the minimum's
// term m * sum(x) costs one multiply-add per block. d and s are float32 (ggml: fp16),
// which spares the dot products a conversion per block and per weight row.
struct block_q8_1 {
  float d;
  float s;
  int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_1) == 40, "block_q8_1 layout");

// Activation block for 256-element formats (ggml's block_q8_K): x[i] = d * qs[i];
// bsums[j] = sum of qs[16j .. 16j+15] (lets formats with a per-block minimum
// subtract it without touching the values again).
struct block_q8_K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
};
static_assert(sizeof(block_q8_K) == 292, "block_q8_K layout");

// Dequantize n elements (a multiple of block_elems) from GGUF blocks to f32.
using DequantFn = void (*)(const void* src, float* dst, int64_t n);
// Dot product of one weight row (n elements, GGUF blocks) with one activation
// row already in the format's vec_dot_type.
using VecDotFn = float (*)(int64_t n, const void* w_row, const void* act_row);
// Optional, for prefill: one weight row against kMultiTokens activation rows,
// out[t] = dot(w_row, act_rows[t]), unpacking the weights once for all of them.
// Must give bitwise the same results as the vec_dot of its ISA.
constexpr int kMultiTokens = 4;
using VecDotMultiFn = void (*)(int64_t n, const void* w_row, const void* const* act_rows, float* out);
// The vec_dot of a multi-token kernel template instantiated for one token (Multi =
// kernel<1>): the same code per token, so kernel<kMultiTokens> is bitwise equal to it.
template <void (*Multi)(int64_t, const void*, const void* const*, float*)>
float single_token(int64_t n, const void* w_row, const void* act_row) {
  float r;
  Multi(n, w_row, &act_row, &r);
  return r;
}
// Optional, for decode: two weight rows against one activation row, out[i] = dot(w_rows[i], act),
// sharing the activation loads. Must give bitwise the same results as the vec_dot of its ISA.
using VecDotPairFn = void (*)(int64_t n, const void* w_row0, const void* w_row1, const void* act_row, float* out);
// Optional, AMX level, for prefill (moebox/amx.h): rows consecutive weight rows
// against n_tokens Q8_K activation rows packed by amx_pack_q8_K,
// y[t * y_stride + r] = dot(w row r, token t). Its own accumulation order: within
// float32 rounding of the vec_dot, not bitwise equal to it.
struct AmxActBlock;
using AmxGemmFn = void (*)(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens,
                           float* y, int64_t y_stride);

struct FormatOps {
  const char* name;
  GgmlType type;
  int block_elems;
  int block_bytes;
  GgmlType vec_dot_type;  // F32, Q8_0, Q8_1 or Q8_K
  DequantFn dequant_f32;
  VecDotFn vec_dot[kIsaCount];  // [kIsaScalar] is required; nullptr = use a lower ISA
  VecDotMultiFn vec_dot_multi[kIsaCount];  // optional (may be left out of the initializer)
  AmxGemmFn amx_gemm;                      // optional: AMX tile kernel (k-quants dotted with Q8_K)
  VecDotPairFn vec_dot_pair[kIsaCount];    // optional: two-row decode kernels
};

// --- registry (native/src/formats/registry.cpp) ---
// nullptr when the type is not a weight format moebox computes with.
const FormatOps* find_format(int type);
// Every registered format, for listing.
const FormatOps* const* all_formats(int* count);
// The vec_dot used at `isa`: that slot, or the nearest lower one that is set.
VecDotFn select_vec_dot(const FormatOps& f, Isa isa);
// The multi-token kernel of the level select_vec_dot picks, or nullptr (then
// callers loop over vec_dot).
VecDotMultiFn select_vec_dot_multi(const FormatOps& f, Isa isa);
// The two-row kernel of that level, or nullptr.
VecDotPairFn select_vec_dot_pair(const FormatOps& f, Isa isa);
// The AMX tile kernel if `isa` is kIsaAmx and the format has one, else nullptr.
inline AmxGemmFn select_amx_gemm(const FormatOps& f, Isa isa) { return isa >= kIsaAmx ? f.amx_gemm : nullptr; }
// Bytes of one row of n elements (n a multiple of block_elems).
inline int64_t row_bytes(const FormatOps& f, int64_t n) { return n / f.block_elems * f.block_bytes; }

// --- activation quantization (native/src/activations.cpp) ---
// Bytes of one activation row of n elements in `act_type`.
int64_t act_row_bytes(GgmlType act_type, int64_t n);
// Convert/quantize one f32 row into `act_type` (F32 copies).
void quantize_act_row(GgmlType act_type, const float* x, void* dst, int64_t n, Isa isa);

// --- scalar conversions shared by every format ---
inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      uint32_t m = mant;
      do {
        ++e;
        m <<= 1;
      } while ((m & 0x400u) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xffu) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (((x >> 23) & 0xffu) == 0xffu) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: correct
  return static_cast<uint16_t>(sign | h);
}

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

// Value of element i of an activation row in `act_type` (reference paths only).
inline float act_value(GgmlType act_type, const void* row, int64_t i) {
  switch (act_type) {
    case GgmlType::Q8_K: {
      const auto* b = static_cast<const block_q8_K*>(row) + i / QK_K;
      return b->d * b->qs[i % QK_K];
    }
    case GgmlType::Q8_0: {
      const auto* b = static_cast<const block_q8_0*>(row) + i / QK8_0;
      return fp16_to_f32(b->d) * b->qs[i % QK8_0];
    }
    case GgmlType::Q8_1: {
      const auto* b = static_cast<const block_q8_1*>(row) + i / QK8_0;
      return b->d * b->qs[i % QK8_0];
    }
    default:
      return static_cast<const float*>(row)[i];
  }
}

// Scalar reference dot product for any format: dequantize one weight block,
// multiply with the activation values, accumulate in double. Slow, exact
// enough to be the yardstick the ISA variants are tested against.
template <DequantFn Dequant, int BlockElems, int BlockBytes, GgmlType ActType>
float vec_dot_ref(int64_t n, const void* w_row, const void* act_row) {
  float w[BlockElems];
  double sum = 0.0;
  const auto* wb = static_cast<const uint8_t*>(w_row);
  for (int64_t b = 0; b < n / BlockElems; ++b) {
    Dequant(wb + b * BlockBytes, w, BlockElems);
    for (int i = 0; i < BlockElems; ++i) sum += static_cast<double>(w[i]) * act_value(ActType, act_row, b * BlockElems + i);
  }
  return static_cast<float>(sum);
}

}  // namespace moebox
