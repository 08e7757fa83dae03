// ggml's k-quant super-block formats (256 elements), byte layouts as in ggml-common.h.
// All are dotted with block_q8_K activations.
#pragma once
#include <cstdint>

#include "moebox/formats.h"

namespace moebox {

// 16 sub-blocks of 16: x = d * (scales[k] & 15) * q - dmin * (scales[k] >> 4), q in 0..3.
// Element 128h + 32s + l = (qs[32h + l] >> 2s) & 3.
struct block_q2_K {
  uint8_t scales[QK_K / 16];
  uint8_t qs[QK_K / 4];
  uint16_t d, dmin;
};
// 16 sub-blocks of 16, 6-bit signed scales (minus 32) packed in 12 bytes:
// x = d * scale[k] * (q - (hmask bit set ? 0 : 4)), q in 0..3 as in Q2_K;
// hmask bit (4h + s) of hmask[l] belongs to element 128h + 32s + l.
struct block_q3_K {
  uint8_t hmask[QK_K / 8];
  uint8_t qs[QK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
// 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes:
// x = d * sc[k] * q - dmin * m[k]; element 64j + l = qs[32j + l] & 15, 64j + 32 + l = qs[32j + l] >> 4.
struct block_q4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[QK_K / 2];
};
// Q4_K plus a fifth bit: bit (2j) of qh[l] for element 64j + l, bit (2j+1) for 64j + 32 + l.
struct block_q5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
// 16 sub-blocks of 16, int8 scales: x = d * scales[k] * (q - 32), q 6 bits (4 in ql, 2 in qh).
struct block_q6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  uint16_t d;
};
static_assert(sizeof(block_q2_K) == 84 && sizeof(block_q3_K) == 110, "k-quant layout");
static_assert(sizeof(block_q4_K) == 144 && sizeof(block_q5_K) == 176 && sizeof(block_q6_K) == 210, "k-quant layout");

// Q4_K/Q5_K: unpack the 12 scale bytes into 8 scales (utmp bytes 0..7) and 8 mins (bytes 8..15).
inline void unpack_scales_mins_k4(const uint8_t* packed, uint32_t utmp[4]) {
  constexpr uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
  std::memcpy(utmp, packed, 12);
  utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
  const uint32_t uaux = utmp[1] & kmask1;
  utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
  utmp[2] = uaux;
  utmp[0] &= kmask1;
}

// Q3_K: unpack the 12 scale bytes into 16 signed 6-bit scales (still offset by 32).
inline void unpack_scales_q3_K(const uint8_t* packed, uint32_t aux[4]) {
  constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  uint32_t a[3];
  std::memcpy(a, packed, 12);
  aux[0] = (a[0] & kmask2) | (((a[2] >> 0) & kmask1) << 4);
  aux[1] = (a[1] & kmask2) | (((a[2] >> 2) & kmask1) << 4);
  aux[2] = ((a[0] >> 4) & kmask2) | (((a[2] >> 4) & kmask1) << 4);
  aux[3] = ((a[1] >> 4) & kmask2) | (((a[2] >> 6) & kmask1) << 4);
}

// AVX-512 + VNNI variants (k_quants_avx512.cpp).
float vec_dot_q2_K_avx512(int64_t n, const void* w, const void* a);
float vec_dot_q3_K_avx512(int64_t n, const void* w, const void* a);
float vec_dot_q4_K_avx512(int64_t n, const void* w, const void* a);
float vec_dot_q6_K_avx512(int64_t n, const void* w, const void* a);
// kMultiTokens activation rows at once (see VecDotMultiFn).
void q2_K_avx512_multi(int64_t n, const void* w, const void* const* a, float* out);
void q3_K_avx512_multi(int64_t n, const void* w, const void* const* a, float* out);
void q4_K_avx512_multi(int64_t n, const void* w, const void* const* a, float* out);
void q6_K_avx512_multi(int64_t n, const void* w, const void* const* a, float* out);

}  // namespace moebox
