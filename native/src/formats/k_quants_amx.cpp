// AMX tile kernels for k-quant weights against Q8_K activations (see moebox/amx.h).
//
// Q4_K, per super-block and 16 weight rows:
//   A_j = the 4-bit quants of sub-block j (32 elements), one byte each  [16 rows x 32 B]
//   B_j = the same 32 elements of 16 tokens (AmxActBlock, VNNI)          [8 x 64 B]
//   C_j = A_j B_j (TDPBUSD, exact int32), stored and scaled per row:
//   S[r][t] = sum_j sc[r][j] C_j[r][t]         (int32, as the vec_dot's lanes)
//   M[r][t] = sum_j min[r][j] bsum_j[t]        (int32, vpdpwssd on pairs of sub-blocks)
//   y[r][t] += d_x[t] (d[r] S - dmin[r] M)     (float, once per super-block)
// The integer sums are those of the vec_dot; only the float accumulation order
// differs. Up to kMaxGroups groups of 16 tokens share one unpacking of the weights.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "k_quants.h"
#include "moebox/amx.h"

namespace moebox {
namespace {

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

// tmm0, tmm1: A, 16 weight rows x 32 bytes (one 32-element sub-block)
// tmm2, tmm3: B, 8 rows x 64 bytes (the same 32 elements of 16 tokens)
// tmm4, tmm5: C, 16 x 16 int32
MOEBOX_TARGET_AMX void load_tile_config_k32() {
  TileConfig cfg;
  for (int t = 0; t < 2; ++t) {
    cfg.rows[t] = kRows;
    cfg.colsb[t] = 32;
    cfg.rows[2 + t] = 8;
    cfg.colsb[2 + t] = 64;
    cfg.rows[4 + t] = kRows;
    cfg.colsb[4 + t] = 64;
  }
  compiler_barrier();
  _tile_loadconfig(&cfg);
}

// One row block of the Q4_K weights, unpacked for the tiles.
struct Q4KRows {
  alignas(64) uint8_t q[4][kRows][64];  // q[c][r]: sub-block 2c in bytes 0-31, 2c+1 in bytes 32-63
  alignas(64) int32_t sc[kRows][8];     // sub-block scales
  alignas(64) int32_t mins[kRows][4];   // (min 2p, min 2p+1) as int16 pairs, for vpdpwssd
  alignas(64) float d[kRows], dmin[kRows];
};

MOEBOX_TARGET_AMX void unpack_q4_K(const block_q4_K& x, int r, Q4KRows& u) {
  u.d[r] = _cvtsh_ss(x.d);
  u.dmin[r] = _cvtsh_ss(x.dmin);
  uint32_t utmp[4];
  unpack_scales_mins_k4(x.scales, utmp);
  uint8_t sm[16];
  std::memcpy(sm, utmp, 16);
  for (int j = 0; j < 8; ++j) u.sc[r][j] = sm[j];
  for (int p = 0; p < 4; ++p) u.mins[r][p] = sm[8 + 2 * p] | (sm[9 + 2 * p] << 16);
  const __m512i m4 = _mm512_set1_epi8(0xF);
  for (int h = 0; h < 2; ++h) {
    // 64 bytes = sub-blocks 4h..4h+3: per 32 bytes, low nibbles one sub-block, high nibbles the next
    const __m512i bits = _mm512_loadu_si512(x.qs + 64 * h);
    const __m512i lo = _mm512_and_si512(bits, m4), hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
    _mm512_storeu_si512(u.q[2 * h][r], _mm512_shuffle_i64x2(lo, hi, 0x44));
    _mm512_storeu_si512(u.q[2 * h + 1][r], _mm512_shuffle_i64x2(lo, hi, 0xEE));
  }
}

}  // namespace

MOEBOX_TARGET_AMX void gemm_q4_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act,
                                     int64_t n_tokens, float* y, int64_t y_stride) {
  const int64_t nb = n / QK_K, row_bytes = nb * static_cast<int64_t>(sizeof(block_q4_K));
  const int64_t groups = amx_groups(n_tokens);
  load_tile_config_k32();
  Q4KRows u;
  alignas(64) int32_t c[2][kRows][kAmxTokens];
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
          // The 16 rows are 16 streams across page borders: fetch the next row block's
          // super-block while this one is computed.
          if (g0 == 0 && r0 + kRows + r < rows) {
            const uint8_t* next = row + kRows * row_bytes + i * static_cast<int64_t>(sizeof(block_q4_K));
            for (int off = 0; off < static_cast<int>(sizeof(block_q4_K)); off += 64) __builtin_prefetch(next + off, 0, 3);
          }
          unpack_q4_K(reinterpret_cast<const block_q4_K*>(row)[i], r, u);
        }
        compiler_barrier();
        for (int g = 0; g < ng; ++g) {
          const AmxActBlock& b = act[(g0 + g) * nb + i];
          __m512i s[kRows];
          for (int r = 0; r < kRows; ++r) s[r] = _mm512_setzero_si512();
          for (int cpair = 0; cpair < 4; ++cpair) {  // sub-blocks 2 cpair and 2 cpair + 1
            const int j = 2 * cpair;
            _tile_loadd(0, u.q[cpair][0], 64);
            _tile_loadd(2, b.qs[8 * j], 64);
            _tile_zero(4);
            _tile_dpbusd(4, 0, 2);
            _tile_loadd(1, u.q[cpair][0] + 32, 64);
            _tile_loadd(3, b.qs[8 * (j + 1)], 64);
            _tile_zero(5);
            _tile_dpbusd(5, 1, 3);
            _tile_stored(4, c[0], 64);
            _tile_stored(5, c[1], 64);
            for (int r = 0; r < kRows; ++r) {
              const __m512i p0 = _mm512_mullo_epi32(_mm512_set1_epi32(u.sc[r][j]), _mm512_load_si512(c[0][r]));
              const __m512i p1 = _mm512_mullo_epi32(_mm512_set1_epi32(u.sc[r][j + 1]), _mm512_load_si512(c[1][r]));
              s[r] = _mm512_add_epi32(s[r], _mm512_add_epi32(p0, p1));
            }
          }
          const __m512 dx = _mm512_load_ps(b.d);
          __m512i bs[4];
          for (int p = 0; p < 4; ++p) bs[p] = _mm512_load_si512(b.bsums32[p]);
          for (int r = 0; r < kRows; ++r) {
            __m512i m = _mm512_setzero_si512();
            for (int p = 0; p < 4; ++p) m = _mm512_dpwssd_epi32(m, _mm512_set1_epi32(u.mins[r][p]), bs[p]);
            __m512 t = _mm512_mul_ps(_mm512_set1_ps(u.d[r]), _mm512_cvtepi32_ps(s[r]));
            t = _mm512_fnmadd_ps(_mm512_set1_ps(u.dmin[r]), _mm512_cvtepi32_ps(m), t);
            _mm512_store_ps(acc[g][r], _mm512_fmadd_ps(dx, t, _mm512_load_ps(acc[g][r])));
          }
        }
      }
      for (int g = 0; g < ng; ++g)
        for (int t = 0; t < kAmxTokens; ++t) {
          const int64_t token = (g0 + g) * kAmxTokens + t;
          if (token >= n_tokens) break;
          float* out = y + token * y_stride + r0;
          for (int r = 0; r < nr; ++r) out[r] = acc[g][r][t];
        }
    }
  }
  _tile_release();
}

}  // namespace moebox
