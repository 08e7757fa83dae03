// IQ2_XXS, IQ2_XS, IQ2_S: 2-bit codebook formats (E8 lattice points, values
// 0x08 / 0x19 / 0x2b, with sign bits). Scalar reference + AVX2.
#include "iq_common.h"
#include "moebox/amx.h"

namespace moebox {

using iq::grid_byte;
using iq::ksigns_iq2xs;

// ---------------------------------------------------------------- IQ2_XXS

void dequant_iq2_xxs(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const block_iq2_xxs*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int ib = 0; ib < QK_K / 32; ++ib) {
      const uint32_t idx = iq::load_u32(x[i].qs + 4 * ib);
      const uint32_t aux = iq::load_u32(x[i].qs + 4 * ib + 2);
      const float db = d * (0.5f + static_cast<float>(aux >> 28)) * 0.25f;
      for (int l = 0; l < 4; ++l) {
        const uint64_t g = iq::iq2xxs_grid[(idx >> (8 * l)) & 0xff];
        const uint8_t signs = ksigns_iq2xs[(aux >> (7 * l)) & 127];
        for (int j = 0; j < 8; ++j) *dst++ = db * grid_byte(g, j) * ((signs >> j) & 1 ? -1.f : 1.f);
      }
    }
  }
}

float vec_dot_iq2_xxs_q8_K(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq2_xxs*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    int32_t bsum = 0;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
      const uint32_t idx = iq::load_u32(x[i].qs + 4 * ib);
      const uint32_t aux = iq::load_u32(x[i].qs + 4 * ib + 2);
      int32_t sumi = 0;
      for (int l = 0; l < 4; ++l, q8 += 8) {
        const uint64_t g = iq::iq2xxs_grid[(idx >> (8 * l)) & 0xff];
        const uint8_t signs = ksigns_iq2xs[(aux >> (7 * l)) & 127];
        for (int j = 0; j < 8; ++j) sumi += grid_byte(g, j) * q8[j] * ((signs >> j) & 1 ? -1 : 1);
      }
      bsum += sumi * static_cast<int32_t>(2 * (aux >> 28) + 1);
    }
    sumf += fp16_to_f32(x[i].d) * y[i].d * static_cast<float>(bsum);
  }
  return 0.125f * sumf;
}

// AVX2 (iq::signed_grid_avx2): grid entries and ±1 sign bytes by scalar loads.
struct Iq2xxsAvx2 : iq::SignBytes {
  using Block = block_iq2_xxs;
  static constexpr float kFactor = 0.125f;
  MOEBOX_TARGET_AVX2 static iq::SignedGridStep2 step(const Block& b, int ib) {
    const uint64_t* grid = iq::iq2xxs_grid;
    const uint64_t* sgn = iq::ksigns_bytes;
    uint32_t a[4];  // [idx, signs+scale] for sub-blocks ib and ib+1
    std::memcpy(a, reinterpret_cast<const uint8_t*>(b.qs) + 8 * ib, 16);
    const auto* i8 = reinterpret_cast<const uint8_t*>(a);
    return {{_mm256_set_epi64x(grid[i8[3]], grid[i8[2]], grid[i8[1]], grid[i8[0]]),
             _mm256_set_epi64x(grid[i8[11]], grid[i8[10]], grid[i8[9]], grid[i8[8]])},
            {_mm256_set_epi64x(sgn[(a[1] >> 21) & 127], sgn[(a[1] >> 14) & 127], sgn[(a[1] >> 7) & 127], sgn[a[1] & 127]),
             _mm256_set_epi64x(sgn[(a[3] >> 21) & 127], sgn[(a[3] >> 14) & 127], sgn[(a[3] >> 7) & 127], sgn[a[3] & 127])},
            {_mm256_set1_epi16(static_cast<int16_t>(2 * (a[1] >> 28) + 1)),
             _mm256_set1_epi16(static_cast<int16_t>(2 * (a[3] >> 28) + 1))}};
  }
};

// AVX-512 VNNI (iq::signed_grid_avx512): one gather fetches the 8 grid entries of 64
// weights; the 7-bit sign indices become a 64-bit mask.
struct Iq2xxsAvx512 {
  using Block = block_iq2_xxs;
  static constexpr float kFactor = 0.125f;
  static int prepare(const Block&) { return 0; }
  MOEBOX_TARGET_AVX512 static iq::SignedGridStep step(const Block& b, int, int k) {
    uint32_t a[4];  // sub-block 2k: a[0] indices, a[1] signs+scale; sub-block 2k+1: a[2], a[3]
    std::memcpy(a, reinterpret_cast<const uint8_t*>(b.qs) + 16 * k, 16);
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, static_cast<int>(a[2]), static_cast<int>(a[0])));
    return {iq::lookup8(iq::iq2xxs_grid, idx), iq::ksigns_mask(a[1], a[3]),
            iq::pair_scales(2 * (a[1] >> 28) + 1, 2 * (a[3] >> 28) + 1)};
  }
};

float vec_dot_iq2_xxs_q8_K_avx2(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx2<Iq2xxsAvx2, 1>>(n, w, a);
}
float vec_dot_iq2_xxs_q8_K_avx512(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx512<Iq2xxsAvx512, 1>>(n, w, a);
}

// ---------------------------------------------------------------- IQ2_XS

void dequant_iq2_xs(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const block_iq2_xs*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int ib = 0; ib < QK_K / 32; ++ib) {
      const float db[2] = {d * (0.5f + (x[i].scales[ib] & 0xf)) * 0.25f, d * (0.5f + (x[i].scales[ib] >> 4)) * 0.25f};
      for (int l = 0; l < 4; ++l) {
        const uint16_t q = x[i].qs[4 * ib + l];
        const uint64_t g = iq::iq2xs_grid[q & 511];
        const uint8_t signs = ksigns_iq2xs[q >> 9];
        for (int j = 0; j < 8; ++j) *dst++ = db[l / 2] * grid_byte(g, j) * ((signs >> j) & 1 ? -1.f : 1.f);
      }
    }
  }
}

float vec_dot_iq2_xs_q8_K(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq2_xs*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    int32_t bsum = 0;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
      const int32_t ls[2] = {2 * (x[i].scales[ib] & 0xf) + 1, 2 * (x[i].scales[ib] >> 4) + 1};
      for (int l = 0; l < 4; ++l, q8 += 8) {
        const uint16_t q = x[i].qs[4 * ib + l];
        const uint64_t g = iq::iq2xs_grid[q & 511];
        const uint8_t signs = ksigns_iq2xs[q >> 9];
        int32_t sumi = 0;
        for (int j = 0; j < 8; ++j) sumi += grid_byte(g, j) * q8[j] * ((signs >> j) & 1 ? -1 : 1);
        bsum += sumi * ls[l / 2];
      }
    }
    sumf += fp16_to_f32(x[i].d) * y[i].d * static_cast<float>(bsum);
  }
  return 0.125f * sumf;
}

// Scales for one 32-weight sub-block as int16 lanes: low 128 bits (weights 0..15)
// get the low-nibble scale, high 128 bits (16..31) the high-nibble one.
MOEBOX_TARGET_AVX2 static inline __m256i split_scales(uint8_t sc) {
  return _mm256_blend_epi32(_mm256_set1_epi16(static_cast<int16_t>(2 * (sc & 0xf) + 1)),
                            _mm256_set1_epi16(static_cast<int16_t>(2 * (sc >> 4) + 1)), 0xf0);
}

// AVX2 (iq::signed_grid_avx2): 9-bit grid indices, sign bytes computed (not looked up)
// as masks.
struct Iq2xsAvx2 : iq::SignMask {
  using Block = block_iq2_xs;
  static constexpr float kFactor = 0.125f;
  MOEBOX_TARGET_AVX2 static iq::SignedGridStep2 step(const Block& b, int ib) {
    const uint64_t* grid = iq::iq2xs_grid;
    // Sign bytes: 7 stored bits plus their parity as bit 7 (0x80 where the 4-bit fold
    // s ^ (s >> 4) has odd parity).
    const __m128i odd_parity = _mm_setr_epi8(0, -128, -128, 0, -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0);
    // Byte j of the 32 weights of groups 0..3 (4..7) takes the sign byte of group j / 8: the
    // low byte of 16-bit lane j / 8 (+ 4), then bit j % 8 of it.
    const __m256i spread_lo = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4,
                                               6, 6, 6, 6, 6, 6, 6, 6);
    const __m256i spread_hi = _mm256_add_epi8(spread_lo, _mm256_set1_epi8(8));
    const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 4 * ib));  // 8 x (index | signs << 9)
    alignas(16) uint16_t gi[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(gi), _mm_and_si128(q, _mm_set1_epi16(511)));
    const __m128i s7 = _mm_srli_epi16(q, 9);
    const __m128i full = _mm_or_si128(s7, _mm_shuffle_epi8(odd_parity, _mm_xor_si128(s7, _mm_srli_epi16(q, 13))));
    const __m256i both = _mm256_broadcastsi128_si256(full);
    return {{_mm256_set_epi64x(grid[gi[3]], grid[gi[2]], grid[gi[1]], grid[gi[0]]),
             _mm256_set_epi64x(grid[gi[7]], grid[gi[6]], grid[gi[5]], grid[gi[4]])},
            {_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(both, spread_lo), bit), bit),
             _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(both, spread_hi), bit), bit)},
            {split_scales(b.scales[ib]), split_scales(b.scales[ib + 1])}};
  }
};

// AVX-512 VNNI (iq::signed_grid_avx512): 9-bit grid indices widened and gathered (one
// gather per 64 weights), the 7-bit sign fields packed by pext into ksigns_mask,
// per-16 scales.
struct Iq2xsAvx512 {
  using Block = block_iq2_xs;
  static constexpr float kFactor = 0.125f;
  MOEBOX_TARGET_AVX512 static __m512i prepare(const Block& b) { return _mm512_castsi256_si512(iq::nibble_scales16(b.scales)); }
  MOEBOX_TARGET_AVX512 static iq::SignedGridStep step(const Block& b, __m512i ls, int k) {
    iq::SignedGridStep s;
    iq::iq2_xs_grid_signs(reinterpret_cast<const uint8_t*>(b.qs) + 16 * k, s.grid, s.signs);
    s.scale = _mm512_permutexvar_epi16(_mm512_load_si512(iq::kScale16OfPair[k]), ls);
    return s;
  }
};

float vec_dot_iq2_xs_q8_K_avx2(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx2<Iq2xsAvx2, 1>>(n, w, a);
}
float vec_dot_iq2_xs_q8_K_avx512(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx512<Iq2xsAvx512, 1>>(n, w, a);
}

// ---------------------------------------------------------------- IQ2_S

static inline int iq2_s_index(const block_iq2_s& b, int ib, int l) {
  return b.qs[4 * ib + l] | ((b.qh[ib] << (8 - 2 * l)) & 0x300);
}

void dequant_iq2_s(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const block_iq2_s*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    const uint8_t* signs = x[i].qs + QK_K / 8;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
      const float db[2] = {d * (0.5f + (x[i].scales[ib] & 0xf)) * 0.25f, d * (0.5f + (x[i].scales[ib] >> 4)) * 0.25f};
      for (int l = 0; l < 4; ++l) {
        const uint64_t g = iq::iq2s_grid[iq2_s_index(x[i], ib, l)];
        const uint8_t s = signs[4 * ib + l];
        for (int j = 0; j < 8; ++j) *dst++ = db[l / 2] * grid_byte(g, j) * ((s >> j) & 1 ? -1.f : 1.f);
      }
    }
  }
}

float vec_dot_iq2_s_q8_K(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq2_s*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    const uint8_t* signs = x[i].qs + QK_K / 8;
    int32_t bsum = 0;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
      const int32_t ls[2] = {2 * (x[i].scales[ib] & 0xf) + 1, 2 * (x[i].scales[ib] >> 4) + 1};
      for (int l = 0; l < 4; ++l, q8 += 8) {
        const uint64_t g = iq::iq2s_grid[iq2_s_index(x[i], ib, l)];
        const uint8_t s = signs[4 * ib + l];
        int32_t sumi = 0;
        for (int j = 0; j < 8; ++j) sumi += grid_byte(g, j) * q8[j] * ((s >> j) & 1 ? -1 : 1);
        bsum += sumi * ls[l / 2];
      }
    }
    sumf += fp16_to_f32(x[i].d) * y[i].d * static_cast<float>(bsum);
  }
  return 0.125f * sumf;
}

// AVX2 (iq::signed_grid_avx2): 10-bit grid indices, the explicit sign bits as masks.
struct Iq2sAvx2 : iq::SignMask {
  using Block = block_iq2_s;
  static constexpr float kFactor = 0.125f;
  MOEBOX_TARGET_AVX2 static iq::SignedGridStep2 step(const Block& b, int ib) {
    const uint64_t* grid = iq::iq2s_grid;
    const uint8_t* qs = b.qs + 4 * ib;
    const uint8_t* signs = b.qs + QK_K / 8 + 4 * ib;
    const uint32_t h1 = b.qh[ib], h2 = b.qh[ib + 1];
    return {{_mm256_set_epi64x(grid[qs[3] | ((h1 << 2) & 0x300)], grid[qs[2] | ((h1 << 4) & 0x300)],
                               grid[qs[1] | ((h1 << 6) & 0x300)], grid[qs[0] | ((h1 << 8) & 0x300)]),
             _mm256_set_epi64x(grid[qs[7] | ((h2 << 2) & 0x300)], grid[qs[6] | ((h2 << 4) & 0x300)],
                               grid[qs[5] | ((h2 << 6) & 0x300)], grid[qs[4] | ((h2 << 8) & 0x300)])},
            {iq::sign_bits_to_mask(iq::load_u32(signs)), iq::sign_bits_to_mask(iq::load_u32(signs + 4))},
            {split_scales(b.scales[ib]), split_scales(b.scales[ib + 1])}};
  }
};

// AVX-512 VNNI (iq::signed_grid_avx512): 10-bit grid indices assembled as vectors and
// gathered, the explicit sign bits used directly as the mask, per-16 scales.
struct Iq2sAvx512 {
  using Block = block_iq2_s;
  static constexpr float kFactor = 0.125f;
  MOEBOX_TARGET_AVX512 static __m512i prepare(const Block& b) { return _mm512_castsi256_si512(iq::nibble_scales16(b.scales)); }
  MOEBOX_TARGET_AVX512 static iq::SignedGridStep step(const Block& b, __m512i ls, int k) {
    // Lane l of the 8 groups of 64 weights: qh byte l / 4 (of the pair), bits 2 (l % 4), +1.
    const __m256i qh_lane = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i qh_shift = _mm256_setr_epi32(8, 6, 4, 2, 8, 6, 4, 2);
    const __m256i lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.qs + 8 * k)));
    const __m256i qh =
        _mm256_permutevar8x32_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi32_si128(iq::load_u16(b.qh + 2 * k))), qh_lane);
    const __m256i idx = _mm256_or_si256(lo, _mm256_and_si256(_mm256_sllv_epi32(qh, qh_shift), _mm256_set1_epi32(0x300)));
    uint64_t sign_bits;
    std::memcpy(&sign_bits, b.qs + QK_K / 8 + 8 * k, 8);
    return {iq::lookup8(iq::iq2s_grid, idx), sign_bits, _mm512_permutexvar_epi16(_mm512_load_si512(iq::kScale16OfPair[k]), ls)};
  }
};

float vec_dot_iq2_s_q8_K_avx2(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx2<Iq2sAvx2, 1>>(n, w, a);
}
float vec_dot_iq2_s_q8_K_avx512(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx512<Iq2sAvx512, 1>>(n, w, a);
}

extern const FormatOps kFormatIQ2_XXS = {
    "IQ2_XXS", GgmlType::IQ2_XXS, QK_K, sizeof(block_iq2_xxs), GgmlType::Q8_K, dequant_iq2_xxs,
    {vec_dot_iq2_xxs_q8_K, vec_dot_iq2_xxs_q8_K_avx2, vec_dot_iq2_xxs_q8_K_avx512, nullptr},
    {nullptr, iq::signed_grid_avx2<Iq2xxsAvx2, kMultiTokens>, iq::signed_grid_avx512<Iq2xxsAvx512, kMultiTokens>, nullptr},
    gemm_iq2_xxs_amx};
extern const FormatOps kFormatIQ2_XS = {
    "IQ2_XS", GgmlType::IQ2_XS, QK_K, sizeof(block_iq2_xs), GgmlType::Q8_K, dequant_iq2_xs,
    {vec_dot_iq2_xs_q8_K, vec_dot_iq2_xs_q8_K_avx2, vec_dot_iq2_xs_q8_K_avx512, nullptr},
    {nullptr, iq::signed_grid_avx2<Iq2xsAvx2, kMultiTokens>, iq::signed_grid_avx512<Iq2xsAvx512, kMultiTokens>, nullptr},
    gemm_iq2_xs_amx};
extern const FormatOps kFormatIQ2_S = {
    "IQ2_S", GgmlType::IQ2_S, QK_K, sizeof(block_iq2_s), GgmlType::Q8_K, dequant_iq2_s,
    {vec_dot_iq2_s_q8_K, vec_dot_iq2_s_q8_K_avx2, vec_dot_iq2_s_q8_K_avx512, nullptr},
    {nullptr, iq::signed_grid_avx2<Iq2sAvx2, kMultiTokens>, iq::signed_grid_avx512<Iq2sAvx512, kMultiTokens>, nullptr},
    gemm_iq2_s_amx};

}  // namespace moebox
