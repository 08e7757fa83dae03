// AMX int8 tiles for prefill: many tokens against the same weight rows.
//
// TDPBUSD multiplies a tile A of unsigned bytes [16 rows x 64 bytes] with a tile
// B of signed bytes in VNNI order [K/4 rows x 16 columns x 4 bytes] into int32
// C [16 x 16]. Weights are A: the kernels unpack 16 weight rows of one
// super-block to one byte per element; activations (Q8_K) are B, repacked once
// per call into AmxActBlocks (16 tokens per block) by amx_pack_q8_K. Sub-block
// scales change every 32 (Q4_K) or 16 (Q2_K, Q3_K, Q6_K) elements, so the kernels
// multiply them into the unpacked quants (split in byte planes so that each
// product fits a byte: two for Q4_K and Q6_K, one for Q2_K and Q3_K) and the
// tiles accumulate exact int32 sums over a whole super-block; block minimums come
// from the activation block sums, as in the vec_dot.
//
// Formats that decode to int8 values and int16 scales (Q6_K and the IQ formats) share one
// unpacking (native/src/formats/amx_tiles.h): 16-bit products split into a low-
// and a high-byte plane.
//
// Formats with an AMX kernel: Q2_K, Q3_K, Q4_K, Q6_K, IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
// IQ3_XXS, IQ3_S, IQ4_XS. Every other format keeps
// its AVX-512 (or AVX2) vec_dot at the AMX level.
#pragma once
#include <cstdint>

#include "moebox/formats.h"

namespace moebox {

constexpr int kAmxTokens = 16;  // tokens per B tile (its columns)
// Batches with fewer tokens per weight row stay on the vec_dot kernels: below
// this a mostly empty B tile costs more than the AVX-512 dot of the few tokens.
constexpr int64_t kAmxMinTokens = 4;

// One Q8_K super-block (256 values) of 16 tokens, laid out for tile loads.
// Tokens missing from the last group of a batch are zero (d = 0).
struct alignas(64) AmxActBlock {
  int8_t qs[QK_K / 4][kAmxTokens][4];            // VNNI: qs[k / 4][token][k % 4]
  float d[kAmxTokens];                           // per token
  int16_t bsums16[QK_K / 32][kAmxTokens][2];     // [p][token] = sums of its values 32p..+15, 32p+16..+31
  int16_t bsums32[QK_K / 64][kAmxTokens][2];     // [p][token] = sums of its values 64p..+31, 64p+32..+63
};
static_assert(sizeof(AmxActBlock) == 4096 + 64 + 512 + 256, "AmxActBlock layout");

// Groups of 16 tokens needed for n_tokens.
inline int64_t amx_groups(int64_t n_tokens) { return (n_tokens + kAmxTokens - 1) / kAmxTokens; }

// Packs n_tokens (<= 16) Q8_K rows of n values into n / 256 AmxActBlocks at dst
// (one group); rows[t] is token t's row.
void amx_pack_q8_K(int64_t n, const void* const* rows, int n_tokens, AmxActBlock* dst);

// AmxGemmFn (formats.h) reads the amx_groups(n_tokens) groups of a batch one
// after the other: group g's super-block i at act[g * (n / 256) + i].
// Formats' tile kernels (native/src/formats/k_quants_amx.cpp).
void gemm_q2_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                   int64_t y_stride);
void gemm_q3_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                   int64_t y_stride);
void gemm_q4_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                   int64_t y_stride);
void gemm_q6_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                   int64_t y_stride);
// IQ formats (native/src/formats/iq_amx.cpp).
void gemm_iq4_xs_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                     int64_t y_stride);
void gemm_iq1_s_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                    int64_t y_stride);
void gemm_iq1_m_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                    int64_t y_stride);
void gemm_iq2_xxs_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                      int64_t y_stride);
void gemm_iq2_xs_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                     int64_t y_stride);
void gemm_iq2_s_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                    int64_t y_stride);
void gemm_iq3_xxs_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                      int64_t y_stride);
void gemm_iq3_s_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                    int64_t y_stride);

}  // namespace moebox
