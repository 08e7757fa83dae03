// What the AMX tile kernels of every format share (see moebox/amx.h): the tile
// configuration, and the driver of the kernels whose super-blocks unpack to P byte
// planes with sub-block scales of 16 elements (gemm_planes_amx).
//
// One token group per pass over the unpacked planes (tiles: tmm0 A, tmm1 B,
// tmm2..tmm2+P-1 C): C_p += A_p B over the 4 chunks of 64 elements of a super-block,
// then the format's fold turns the C_p into S = sum_p weight_p C_p exactly in int32
// and adds d_x d S (and its minimum term) to float accumulators, once per super-block.
//
// Formats that decode to int8 values and int16 scales (Q6_K and the IQ formats:
// their table values times their sub-block scales) share one unpacking through the
// Int8ScaledTiles slot: a format only writes how its block decodes.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "moebox/amx.h"

namespace moebox {
namespace amx_tiles {

constexpr int kRows = 16;       // weight rows per A tile
constexpr int kMaxGroups = 4;   // token groups per pass over a row block

// LDTILECFG operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG takes 64 bytes");

// GCC's tile load intrinsics are asm without a memory clobber: without this the
// compiler may move (or drop) the stores that fill a buffer the tiles then read.
inline void compiler_barrier() { __asm__ __volatile__("" ::: "memory"); }

// Token group g0 + g of the call, token t of the group: acc[g][r][t] is y[token][r]
// (y already offset to the row block; rows past nr and tokens past n_tokens are padding).
inline void store_results(const float (*acc)[kRows][kAmxTokens], int ng, int64_t g0, int64_t n_tokens, int nr, float* y,
                          int64_t y_stride) {
  for (int g = 0; g < ng; ++g)
    for (int t = 0; t < kAmxTokens; ++t) {
      const int64_t token = (g0 + g) * kAmxTokens + t;
      if (token >= n_tokens) return;
      float* out = y + token * y_stride;
      for (int r = 0; r < nr; ++r) out[r] = acc[g][r][t];
    }
}

// Every tile 16 rows x 64 bytes: tmm0, tmm1 A_l, A_h; tmm2, tmm3 B of two token
// groups; tmm4..7 C_l, C_h of each group.
MOEBOX_TARGET_AMX inline void load_tile_config() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = kRows;
    cfg.colsb[t] = 64;
  }
  compiler_barrier();
  _tile_loadconfig(&cfg);
}

// Word index vectors for vpermw over 16 sub-block scales (words): chunk c's 32 words
// (64 elements) take the scales of sub-blocks 4c .. 4c+3, 8 words each.
struct ScaleIndex16 {
  __m512i idx[4];
  MOEBOX_TARGET_AMX ScaleIndex16() {
    alignas(64) int16_t v[32];
    for (int c = 0; c < 4; ++c) {
      for (int i = 0; i < 32; ++i) v[i] = static_cast<int16_t>(4 * c + i / 8);
      idx[c] = _mm512_load_si512(v);
    }
  }
};

// C_p (tmm2 + p) += A (tmm0) B (tmm1), A signed or unsigned bytes; tile numbers are
// instruction immediates.
MOEBOX_TARGET_AMX inline void tile_dot(int p, bool signed_a) {
  if (signed_a) {
    if (p == 0) _tile_dpbssd(2, 0, 1);
    else if (p == 1) _tile_dpbssd(3, 0, 1);
    else _tile_dpbssd(4, 0, 1);
  } else {
    if (p == 0) _tile_dpbusd(2, 0, 1);
    else if (p == 1) _tile_dpbusd(3, 0, 1);
    else _tile_dpbusd(4, 0, 1);
  }
}

MOEBOX_TARGET_AMX inline void tile_zero_c(int p) {
  if (p == 0) _tile_zero(2);
  else if (p == 1) _tile_zero(3);
  else _tile_zero(4);
}

MOEBOX_TARGET_AMX inline void tile_store_c(int p, int32_t (*c)[kAmxTokens]) {
  if (p == 0) _tile_stored(2, c, 64);
  else if (p == 1) _tile_stored(3, c, 64);
  else _tile_stored(4, c, 64);
}

template <class F>
MOEBOX_TARGET_AMX void gemm_planes_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act,
                                       int64_t n_tokens, float* y, int64_t y_stride) {
  using Block = typename F::Block;
  constexpr int P = F::kPlanes;
  const int64_t nb = n / QK_K, row_bytes = nb * static_cast<int64_t>(sizeof(Block));
  const int64_t groups = amx_groups(n_tokens);
  load_tile_config();
  const ScaleIndex16 si;
  typename F::Rows u;
  alignas(64) int32_t c[P][kRows][kAmxTokens];
  alignas(64) float acc[kMaxGroups][kRows][kAmxTokens];  // [group][row][token]
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kRows, rows - r0));
    if (nr < kRows) std::memset(&u, 0, sizeof(u));  // rows past the end stay zero
    for (int64_t g0 = 0; g0 < groups; g0 += kMaxGroups) {
      const int ng = static_cast<int>(std::min<int64_t>(kMaxGroups, groups - g0));
      std::memset(acc, 0, sizeof(acc));
      for (int64_t i = 0; i < nb; ++i) {
        for (int r = 0; r < nr; ++r) {
          const uint8_t* row = w + (r0 + r) * row_bytes;
          if (g0 == 0 && r0 + kRows + r < rows) {  // next row block's super-block (see gemm_q4_K_amx)
            const uint8_t* next = row + kRows * row_bytes + i * static_cast<int64_t>(sizeof(Block));
            for (int off = 0; off < static_cast<int>(sizeof(Block)); off += 64) __builtin_prefetch(next + off, 0, 3);
          }
          F::unpack(reinterpret_cast<const Block*>(row)[i], r, u, si);
        }
        compiler_barrier();
        for (int g = 0; g < ng; ++g) {
          const AmxActBlock& b = act[(g0 + g) * nb + i];
          for (int p = 0; p < P; ++p) tile_zero_c(p);
          for (int k = 0; k < 4; ++k) {  // elements 64k..64k+63
            _tile_loadd(1, b.qs[16 * k], 64);
            for (int p = 0; p < P; ++p) {
              _tile_loadd(0, u.plane[p][k][0], 64);
              tile_dot(p, (F::kSignedPlanes >> p) & 1);
            }
          }
          for (int p = 0; p < P; ++p) tile_store_c(p, c[p]);
          compiler_barrier();
          F::fold(u, b, c, acc[g]);
        }
      }
      store_results(acc, ng, g0, n_tokens, nr, y + r0, y_stride);
    }
  }
  _tile_release();
}

// One super-block decoded by a format of the Int8ScaledTiles slot: value k of
// elements 64c..64c+63 in v[c] (int8), the scale of elements 16j..16j+15 in word j
// of s (int16), and the block's float scale d; x = d s v, |s v| < 2^15.
struct Int8Block {
  __m512i v[4];
  __m512i s;  // words 0..15
  float d;
};

// Unpacks through Decode (void Decode(const Block&, Int8Block&)): s v by 16-bit
// multiplies per 128-bit lane (one sub-block of 16), split into its low byte
// (unsigned, TDPBUSD) and high byte (signed, TDPBSSD); S = C_lo + 256 C_hi.
template <class BlockT, void (*Decode)(const BlockT&, Int8Block&)>
struct Int8ScaledTiles {
  using Block = BlockT;
  static constexpr int kPlanes = 2;
  static constexpr int kSignedPlanes = 0b10;
  struct Rows {
    alignas(64) uint8_t plane[2][4][kRows][64];
    alignas(64) float d[kRows];
  };
  MOEBOX_TARGET_AMX static void unpack(const Block& x, int r, Rows& u, const ScaleIndex16& si) {
    Int8Block b;
    Decode(x, b);
    u.d[r] = b.d;
    const __m512i low_byte = _mm512_set1_epi16(0xFF);
    for (int c = 0; c < 4; ++c) {
      // Per 128-bit lane: words of its bytes 0-7 and of 8-15, sign-extended; packing
      // the two back per lane restores the element order.
      const __m512i s = _mm512_permutexvar_epi16(si.idx[c], b.s);  // lane k: scale of sub-block 4c + k
      const __m512i pa = _mm512_mullo_epi16(_mm512_srai_epi16(_mm512_unpacklo_epi8(b.v[c], b.v[c]), 8), s);
      const __m512i pb = _mm512_mullo_epi16(_mm512_srai_epi16(_mm512_unpackhi_epi8(b.v[c], b.v[c]), 8), s);
      _mm512_store_si512(u.plane[0][c][r], _mm512_packus_epi16(_mm512_and_si512(pa, low_byte), _mm512_and_si512(pb, low_byte)));
      _mm512_store_si512(u.plane[1][c][r], _mm512_packs_epi16(_mm512_srai_epi16(pa, 8), _mm512_srai_epi16(pb, 8)));
    }
  }
  MOEBOX_TARGET_AMX static void fold(const Rows& u, const AmxActBlock& b, const int32_t (*c)[kRows][kAmxTokens],
                                     float (*acc)[kAmxTokens]) {
    const __m512 dx = _mm512_load_ps(b.d);
    for (int r = 0; r < kRows; ++r) {
      const __m512i s = _mm512_add_epi32(_mm512_load_si512(c[0][r]), _mm512_slli_epi32(_mm512_load_si512(c[1][r]), 8));
      const __m512 t = _mm512_mul_ps(_mm512_set1_ps(u.d[r]), _mm512_cvtepi32_ps(s));
      _mm512_store_ps(acc[r], _mm512_fmadd_ps(dx, t, _mm512_load_ps(acc[r])));
    }
  }
};

}  // namespace amx_tiles
}  // namespace moebox
