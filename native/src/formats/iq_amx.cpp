// AMX tile kernels for IQ weights against Q8_K activations (see moebox/amx.h): each
// format decodes a super-block to int8 table values and int16 sub-block scales for the
// Int8ScaledTiles slot of amx_tiles.h, which does the rest.
#include "amx_tiles.h"
#include "iq_common.h"

namespace moebox {
namespace {

using namespace amx_tiles;

// IQ4_XS: 8 sub-blocks of 32, value = kvalues_iq4nl[nibble] (int8 in [-127, 113]),
// scale = 6-bit ls - 32 in [-32, 31]: s v within 4064. Sub-block ib is qs[16ib..16ib+15]:
// low nibbles its elements 0..15, high nibbles 16..31.
MOEBOX_TARGET_AMX inline void decode_iq4_xs(const block_iq4_xs& x, Int8Block& b) {
  b.d = _cvtsh_ss(x.d);
  alignas(32) int16_t s[16];
  for (int ib = 0; ib < QK_K / 32; ++ib) {
    const int lo = (x.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
    const int hi = (x.scales_h >> (2 * ib)) & 3;
    s[2 * ib] = s[2 * ib + 1] = static_cast<int16_t>((lo | (hi << 4)) - 32);
  }
  b.s = _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(s)));
  const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(iq::kvalues_iq4nl)));
  const __m512i shift = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);  // lanes 1 and 3: high nibbles
  for (int c = 0; c < 4; ++c) {
    // Chunk c = sub-blocks 2c, 2c+1 = qs[32c..32c+31]: lanes [low, high nibbles of its first
    // 16 bytes, low, high of the next 16].
    const __m512i bytes = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs + 32 * c)));
    const __m512i lanes = _mm512_shuffle_i64x2(bytes, bytes, _MM_SHUFFLE(1, 1, 0, 0));
    const __m512i idx = _mm512_and_si512(_mm512_srlv_epi64(lanes, shift), _mm512_set1_epi8(0xF));
    b.v[c] = _mm512_shuffle_epi8(table, idx);
  }
}

}  // namespace

void gemm_iq4_xs_amx(int64_t n, const uint8_t* w, int64_t rows, const AmxActBlock* act, int64_t n_tokens, float* y,
                     int64_t y_stride) {
  gemm_planes_amx<Int8ScaledTiles<block_iq4_xs, decode_iq4_xs>>(n, w, rows, act, n_tokens, y, y_stride);
}

}  // namespace moebox
