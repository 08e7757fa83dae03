// AMX tile kernels for k-quant weights against Q8_K activations (see moebox/amx.h).
//
// Q4_K, per super-block and 16 weight rows. The 6-bit sub-block scale is split,
// sc = 16 sh + sl (sl < 16, sh < 4), and multiplied into the 4-bit quants, so a
// tile row may span sub-blocks and the tiles accumulate over the whole super-block:
//   A_l = sl q (<= 225), A_h = sh q (<= 45)   unsigned bytes, [16 rows x 64 elements]
//   B   = the same 64 elements of 16 tokens  (AmxActBlock, VNNI)   [16 x 64 B]
//   C_l += A_l B, C_h += A_h B over the 4 chunks of 64 (TDPBUSD, exact int32)
//   S[r][t] = C_l + 16 C_h = sum_k sc q x      (int32, the vec_dot's integer sum)
//   M[r][t] = sum_j min[r][j] bsum_j[t]        (int32, vpdpwssd on pairs of sub-blocks)
//   y[r][t] += d_x[t] (d[r] S - dmin[r] M)     (float, once per super-block)
// Only the float accumulation order differs from the vec_dot. Two token groups
// share each A tile load; up to kMaxGroups groups share one unpacking of the weights.
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

// Every tile 16 rows x 64 bytes: tmm0, tmm1 A_l, A_h; tmm2, tmm3 B of two token
// groups; tmm4..7 C_l, C_h of each group.
MOEBOX_TARGET_AMX void load_tile_config() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = kRows;
    cfg.colsb[t] = 64;
  }
  compiler_barrier();
  _tile_loadconfig(&cfg);
}

// One row block of the Q4_K weights, unpacked for the tiles.
struct Q4KRows {
  alignas(64) uint8_t lo[4][kRows][64];  // sl * q of elements 64c..64c+63 (sub-blocks 2c, 2c+1)
  alignas(64) uint8_t hi[4][kRows][64];  // sh * q
  alignas(64) int32_t mins[kRows][4];    // (min 2p, min 2p+1) as int16 pairs, for vpdpwssd
  alignas(64) float d[kRows], dmin[kRows];
};

// Word index vectors for vpermw: chunk c's 32 words = 16 of sub-block 2c, 16 of 2c+1.
struct ScaleIndex {
  __m512i idx[4];
  MOEBOX_TARGET_AMX ScaleIndex() {
    alignas(64) int16_t v[32];
    for (int c = 0; c < 4; ++c) {
      for (int i = 0; i < 32; ++i) v[i] = static_cast<int16_t>(2 * c + i / 16);
      idx[c] = _mm512_load_si512(v);
    }
  }
};

MOEBOX_TARGET_AMX void unpack_q4_K(const block_q4_K& x, int r, Q4KRows& u, const ScaleIndex& si) {
  u.d[r] = _cvtsh_ss(x.d);
  u.dmin[r] = _cvtsh_ss(x.dmin);
  uint32_t utmp[4];
  unpack_scales_mins_k4(x.scales, utmp);
  uint8_t sm[16];
  std::memcpy(sm, utmp, 16);
  for (int p = 0; p < 4; ++p) u.mins[r][p] = sm[8 + 2 * p] | (sm[9 + 2 * p] << 16);
  const __m512i sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sm))));
  const __m512i sl = _mm512_and_si512(sc16, _mm512_set1_epi16(15)), sh = _mm512_srli_epi16(sc16, 4);
  const __m512i m4 = _mm512_set1_epi8(0xF);
  __m512i q[4];  // elements 64c..64c+63
  for (int h = 0; h < 2; ++h) {
    // 64 bytes = sub-blocks 4h..4h+3: per 32 bytes, low nibbles one sub-block, high nibbles the next
    const __m512i bits = _mm512_loadu_si512(x.qs + 64 * h);
    const __m512i lo = _mm512_and_si512(bits, m4), hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
    q[2 * h] = _mm512_shuffle_i64x2(lo, hi, 0x44);
    q[2 * h + 1] = _mm512_shuffle_i64x2(lo, hi, 0xEE);
  }
  // Byte products through 16-bit multiplies: each byte's product stays below 256, so none carries.
  for (int c = 0; c < 4; ++c) {
    _mm512_storeu_si512(u.lo[c][r], _mm512_mullo_epi16(q[c], _mm512_permutexvar_epi16(si.idx[c], sl)));
    _mm512_storeu_si512(u.hi[c][r], _mm512_mullo_epi16(q[c], _mm512_permutexvar_epi16(si.idx[c], sh)));
  }
}

// acc[r][t] += d_x[t] (d[r] S - dmin[r] M) from the stored C_l, C_h of one token group.
MOEBOX_TARGET_AMX void fold_q4_K(const Q4KRows& u, const AmxActBlock& b, const int32_t (*cl)[kAmxTokens],
                                 const int32_t (*ch)[kAmxTokens], float (*acc)[kAmxTokens]) {
  const __m512 dx = _mm512_load_ps(b.d);
  __m512i bs[4];
  for (int p = 0; p < 4; ++p) bs[p] = _mm512_load_si512(b.bsums32[p]);
  for (int r = 0; r < kRows; ++r) {
    const __m512i s = _mm512_add_epi32(_mm512_load_si512(cl[r]), _mm512_slli_epi32(_mm512_load_si512(ch[r]), 4));
    __m512i m = _mm512_setzero_si512();
    for (int p = 0; p < 4; ++p) m = _mm512_dpwssd_epi32(m, _mm512_set1_epi32(u.mins[r][p]), bs[p]);
    __m512 t = _mm512_mul_ps(_mm512_set1_ps(u.d[r]), _mm512_cvtepi32_ps(s));
    t = _mm512_fnmadd_ps(_mm512_set1_ps(u.dmin[r]), _mm512_cvtepi32_ps(m), t);
    _mm512_store_ps(acc[r], _mm512_fmadd_ps(dx, t, _mm512_load_ps(acc[r])));
  }
}

}  // namespace

MOEBOX_TARGET_AMX void gemm_q4_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act,
                                     int64_t n_tokens, float* y, int64_t y_stride) {
  const int64_t nb = n / QK_K, row_bytes = nb * static_cast<int64_t>(sizeof(block_q4_K));
  const int64_t groups = amx_groups(n_tokens);
  load_tile_config();
  const ScaleIndex si;
  Q4KRows u;
  alignas(64) int32_t c[2][2][kRows][kAmxTokens];        // [group of the pair][C_l, C_h]
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
          unpack_q4_K(reinterpret_cast<const block_q4_K*>(row)[i], r, u, si);
        }
        compiler_barrier();
        for (int g = 0; g < ng; g += 2) {
          const AmxActBlock& b0 = act[(g0 + g) * nb + i];
          const bool pair = g + 1 < ng;
          const AmxActBlock& b1 = act[(g0 + g + (pair ? 1 : 0)) * nb + i];
          _tile_zero(4);
          _tile_zero(5);
          if (pair) {
            _tile_zero(6);
            _tile_zero(7);
          }
          for (int k = 0; k < 4; ++k) {  // elements 64k..64k+63
            _tile_loadd(0, u.lo[k][0], 64);
            _tile_loadd(1, u.hi[k][0], 64);
            _tile_loadd(2, b0.qs[16 * k], 64);
            _tile_dpbusd(4, 0, 2);
            _tile_dpbusd(5, 1, 2);
            if (pair) {
              _tile_loadd(3, b1.qs[16 * k], 64);
              _tile_dpbusd(6, 0, 3);
              _tile_dpbusd(7, 1, 3);
            }
          }
          _tile_stored(4, c[0][0], 64);
          _tile_stored(5, c[0][1], 64);
          if (pair) {
            _tile_stored(6, c[1][0], 64);
            _tile_stored(7, c[1][1], 64);
          }
          fold_q4_K(u, b0, c[0][0], c[0][1], acc[g]);
          if (pair) fold_q4_K(u, b1, c[1][0], c[1][1], acc[g + 1]);
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
