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

#include "amx_tiles.h"
#include "k_quants.h"

namespace moebox {
namespace {

using namespace amx_tiles;

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

// unpack_scales_mins_k4 of 16 rows' super-blocks, 4 rows per vector: sm[r] = 8 scales,
// 8 minimums. A block's first 16 bytes are d, dmin and the 12 scale bytes (u0, u1, u2):
//   sc 0-3 = u0 & k1, sc 4-7 = (u2 & k2) | (u0 >> 6 & k3) << 4,
//   m 0-3 = u1 & k1,  m 4-7 = (u2 >> 4 & k2) | (u1 >> 6 & k3) << 4.
MOEBOX_TARGET_AMX void unpack_scales_q4_K(const block_q4_K* const* blocks, uint8_t (*sm)[16]) {
  const __m512i k1 = _mm512_set1_epi32(0x3f3f3f3f), k2 = _mm512_set1_epi32(0x0f0f0f0f), k3 = _mm512_set1_epi32(0x03030303);
  const __m512i shift = _mm512_set4_epi32(4, 0, 0, 0);  // dword 3: u2 >> 4
  for (int r = 0; r < kRows; r += 4) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[r])));
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[r + 1])), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[r + 2])), 2);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[r + 3])), 3);
    const __m512i p = _mm512_shuffle_epi32(v, static_cast<_MM_PERM_ENUM>(_MM_SHUFFLE(3, 2, 3, 1)));  // u0 u2 u1 u2
    const __m512i q = _mm512_shuffle_epi32(v, static_cast<_MM_PERM_ENUM>(_MM_SHUFFLE(2, 2, 1, 1)));  // u0 u0 u1 u1
    const __m512i even = _mm512_and_si512(p, k1);
    const __m512i odd = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi32(p, shift), k2),
                                        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(q, 6), k3), 4));
    _mm512_store_si512(sm[r], _mm512_mask_blend_epi32(0xAAAA, even, odd));
  }
}

// Row r of the tiles from its block x and its decoded scales sm (unpack_scales_q4_K).
MOEBOX_TARGET_AMX void unpack_q4_K(const block_q4_K& x, const uint8_t* sm, int r, Q4KRows& u, const ScaleIndex& si) {
  u.d[r] = _cvtsh_ss(x.d);
  u.dmin[r] = _cvtsh_ss(x.dmin);
  _mm_store_si128(reinterpret_cast<__m128i*>(u.mins[r]), _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sm + 8))));
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


// --- Q2_K, Q3_K, Q6_K: sub-blocks of 16, scales folded into P byte planes (amx_tiles.h) ---
//
//   Q2_K: A = sl q (<= 45) unsigned, TDPBUSD; S = sum sc q x; the minimums as in Q4_K
//         (M = sum_j min_j bsum16_j by vpdpwssd), y += d_x (d S - dmin M).
//   Q3_K: v = q - 4 (1 - hbit) in [-4, 3], s = scale - 32 in [-32, 31]: s v does not
//         always fit a signed byte (-32 * -4 = 128) but s (-v) in [-128, 124] does, so
//         A = s (-v) signed, TDPBSSD, S = -C.
//   Q6_K: the int8 slot (Int8ScaledTiles): sc (q - 32) in [-4064, 4096] as a low-byte
//         and a high-byte plane, S = C_lo + 256 C_hi.

// Bytes of v times the word multipliers s (one per byte pair), each product within
// a byte (signed or unsigned): a 16-bit product's low byte is exact mod 256, and the
// high byte alone times s is exact mod 256 in its high byte.
MOEBOX_TARGET_AMX inline __m512i mul_bytes(__m512i v, __m512i s) {
  const __m512i lo = _mm512_mullo_epi16(v, s);
  const __m512i hi = _mm512_mullo_epi16(_mm512_and_si512(v, _mm512_set1_epi16(static_cast<int16_t>(0xFF00))), s);
  return _mm512_mask_blend_epi8(0xAAAAAAAAAAAAAAAAull, lo, hi);
}


// Q2_K/Q3_K 2-bit quants of chunk c (elements 64c..64c+63): element 128h + 32s + l is
// bits 2s of qs[32h + l]; the chunk holds s = 2(c & 1), 2(c & 1) + 1 of h = c / 2.
MOEBOX_TARGET_AMX inline __m512i q2_bits(const uint8_t* qs, int c) {
  const __m512i bits = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * (c / 2))));
  const int s0 = 2 * (c & 1);
  const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(2 * s0)),
                                           _mm256_set1_epi16(static_cast<int16_t>(2 * s0 + 2)), 1);
  return _mm512_and_si512(_mm512_srlv_epi16(bits, shift), _mm512_set1_epi8(3));
}

struct Q2KTiles {
  using Block = block_q2_K;
  static constexpr int kPlanes = 1;
  static constexpr int kSignedPlanes = 0;  // TDPBUSD
  struct Rows {
    alignas(64) uint8_t plane[1][4][kRows][64];
    alignas(64) int32_t mins[kRows][8];  // (min 2p, min 2p+1) as int16 pairs
    alignas(64) float d[kRows], dmin[kRows];
  };
  MOEBOX_TARGET_AMX static void unpack(const Block& x, int r, Rows& u, const ScaleIndex16& si) {
    u.d[r] = _cvtsh_ss(x.d);
    u.dmin[r] = _cvtsh_ss(x.dmin);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales));
    const __m128i mins = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0xF));
    _mm256_store_si256(reinterpret_cast<__m256i*>(u.mins[r]), _mm256_cvtepu8_epi16(mins));
    const __m512i sl = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(packed, _mm_set1_epi8(0xF))));
    for (int c = 0; c < 4; ++c)  // products <= 45: no carry between the bytes of a word
      _mm512_store_si512(u.plane[0][c][r], _mm512_mullo_epi16(q2_bits(x.qs, c), _mm512_permutexvar_epi16(si.idx[c], sl)));
  }
  MOEBOX_TARGET_AMX static void fold(const Rows& u, const AmxActBlock& b, const int32_t (*c)[kRows][kAmxTokens],
                                     float (*acc)[kAmxTokens]) {
    const __m512 dx = _mm512_load_ps(b.d);
    __m512i bs[8];
    for (int p = 0; p < 8; ++p) bs[p] = _mm512_load_si512(b.bsums16[p]);
    for (int r = 0; r < kRows; ++r) {
      __m512i m = _mm512_setzero_si512();
      for (int p = 0; p < 8; ++p) m = _mm512_dpwssd_epi32(m, _mm512_set1_epi32(u.mins[r][p]), bs[p]);
      __m512 t = _mm512_mul_ps(_mm512_set1_ps(u.d[r]), _mm512_cvtepi32_ps(_mm512_load_si512(c[0][r])));
      t = _mm512_fnmadd_ps(_mm512_set1_ps(u.dmin[r]), _mm512_cvtepi32_ps(m), t);
      _mm512_store_ps(acc[r], _mm512_fmadd_ps(dx, t, _mm512_load_ps(acc[r])));
    }
  }
};

struct Q3KTiles {
  using Block = block_q3_K;
  static constexpr int kPlanes = 1;
  static constexpr int kSignedPlanes = 1;  // TDPBSSD
  struct Rows {
    alignas(64) int8_t plane[1][4][kRows][64];
    alignas(64) float d[kRows];  // -d: the plane holds s (-v)
  };
  MOEBOX_TARGET_AMX static void unpack(const Block& x, int r, Rows& u, const ScaleIndex16& si) {
    u.d[r] = -_cvtsh_ss(x.d);
    uint32_t aux[4];
    unpack_scales_q3_K(x.scales, aux);
    const __m128i sc8 = _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(aux)), _mm_set1_epi8(32));
    const __m512i s = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(sc8));
    const __m512i hmask = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.hmask)));
    for (int c = 0; c < 4; ++c) {
      // hmask bit 4h + s of byte l for element 128h + 32s + l (h = c / 2, s = 2(c & 1) + half)
      const int b0 = 4 * (c / 2) + 2 * (c & 1);
      const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(b0)),
                                               _mm256_set1_epi16(static_cast<int16_t>(b0 + 1)), 1);
      const __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(hmask, shift), _mm512_set1_epi8(1));
      // -v = 4 - (q + 4 hbit), in [-3, 4]
      const __m512i neg_v = _mm512_sub_epi8(_mm512_set1_epi8(4), _mm512_or_si512(q2_bits(x.qs, c), _mm512_slli_epi16(hb, 2)));
      _mm512_store_si512(u.plane[0][c][r], mul_bytes(neg_v, _mm512_permutexvar_epi16(si.idx[c], s)));
    }
  }
  MOEBOX_TARGET_AMX static void fold(const Rows& u, const AmxActBlock& b, const int32_t (*c)[kRows][kAmxTokens],
                                     float (*acc)[kAmxTokens]) {
    const __m512 dx = _mm512_load_ps(b.d);
    for (int r = 0; r < kRows; ++r) {
      const __m512 t = _mm512_mul_ps(_mm512_set1_ps(u.d[r]), _mm512_cvtepi32_ps(_mm512_load_si512(c[0][r])));
      _mm512_store_ps(acc[r], _mm512_fmadd_ps(dx, t, _mm512_load_ps(acc[r])));
    }
  }
};

// Q6_K in the int8 slot: v = q - 32 (6 bits: 4 in ql, 2 in qh), s = the int8 scales;
// s v in [-4064, 4096].
MOEBOX_TARGET_AMX inline void decode_q6_K(const block_q6_K& x, Int8Block& b) {
  b.d = _cvtsh_ss(x.d);
  b.s = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales))));
  const __m512i m4 = _mm512_set1_epi8(0xF), m30 = _mm512_set1_epi8(0x30), m32 = _mm512_set1_epi8(32);
  for (int h = 0; h < 2; ++h) {
    // Chunk 2h: low nibbles of ql[64h..64h+63], qh bits 0-1 (first 32) and 2-3 (next 32);
    // chunk 2h+1: high nibbles, qh bits 4-5 and 6-7.
    const __m512i ql = _mm512_loadu_si512(x.ql + 64 * h);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qh + 32 * h));
    const __m512i hi01 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_slli_epi16(qh, 4)), _mm256_slli_epi16(qh, 2), 1);
    const __m512i hi23 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
    b.v[2 * h] = _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(hi01, m30)), m32);
    b.v[2 * h + 1] =
        _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), _mm512_and_si512(hi23, m30)), m32);
  }
}

using Q6KTiles = Int8ScaledTiles<block_q6_K, decode_q6_K>;


}  // namespace

MOEBOX_TARGET_AMX void gemm_q4_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act,
                                     int64_t n_tokens, float* y, int64_t y_stride) {
  const int64_t nb = n / QK_K, row_bytes = nb * static_cast<int64_t>(sizeof(block_q4_K));
  const int64_t groups = amx_groups(n_tokens);
  load_tile_config();
  const ScaleIndex si;
  Q4KRows u;
  alignas(64) uint8_t sm[kRows][16];
  alignas(64) int32_t c[2][2][kRows][kAmxTokens];        // [group of the pair][C_l, C_h]
  alignas(64) float acc[kMaxGroups][kRows][kAmxTokens];  // [group][row][token]
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kRows, rows - r0));
    if (nr < kRows) std::memset(&u, 0, sizeof(u));  // rows past the end stay zero
    for (int64_t g0 = 0; g0 < groups; g0 += kMaxGroups) {
      const int ng = static_cast<int>(std::min<int64_t>(kMaxGroups, groups - g0));
      std::memset(acc, 0, sizeof(acc));
      for (int64_t i = 0; i < nb; ++i) {
        const block_q4_K* blocks[kRows];  // super-block i of the 16 rows (rows past the end: the last one)
        for (int r = 0; r < kRows; ++r)
          blocks[r] = reinterpret_cast<const block_q4_K*>(w + (r0 + std::min(r, nr - 1)) * row_bytes) + i;
        unpack_scales_q4_K(blocks, sm);
        for (int r = 0; r < nr; ++r) {
          // The 16 rows are 16 streams across page borders: fetch the next row block's
          // super-block while this one is computed.
          if (g0 == 0 && r0 + kRows + r < rows) {
            const uint8_t* next = reinterpret_cast<const uint8_t*>(blocks[r]) + kRows * row_bytes;
            for (int off = 0; off < static_cast<int>(sizeof(block_q4_K)); off += 64) __builtin_prefetch(next + off, 0, 3);
          }
          unpack_q4_K(*blocks[r], sm[r], r, u, si);
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
      store_results(acc, ng, g0, n_tokens, nr, y + r0, y_stride);
    }
  }
  _tile_release();
}

void gemm_q2_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                   int64_t y_stride) {
  gemm_planes_amx<Q2KTiles>(n, w, rows, act, n_tokens, y, y_stride);
}

void gemm_q3_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                   int64_t y_stride) {
  gemm_planes_amx<Q3KTiles>(n, w, rows, act, n_tokens, y, y_stride);
}

void gemm_q6_K_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                   int64_t y_stride) {
  gemm_planes_amx<Q6KTiles>(n, w, rows, act, n_tokens, y, y_stride);
}

}  // namespace moebox
