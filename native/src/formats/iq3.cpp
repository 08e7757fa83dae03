// IQ3_XXS and IQ3_S: 3-bit codebook formats (4 values per grid entry, sign
// bits per weight). Scalar reference + AVX2.
#include "iq_common.h"
#include "moebox/amx.h"

namespace moebox {

using iq::grid_byte;
using iq::ksigns_iq2xs;

// ---------------------------------------------------------------- IQ3_XXS

void dequant_iq3_xxs(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const block_iq3_xxs*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    const uint8_t* q3 = x[i].qs;
    for (int ib = 0; ib < QK_K / 32; ++ib, q3 += 8) {
      const uint32_t aux = iq::load_u32(x[i].qs + QK_K / 4 + 4 * ib);
      const float db = d * (0.5f + static_cast<float>(aux >> 28)) * 0.5f;
      for (int l = 0; l < 4; ++l) {
        const uint8_t signs = ksigns_iq2xs[(aux >> (7 * l)) & 127];
        const uint64_t g = iq::iq3xxs_grid[q3[2 * l]] | static_cast<uint64_t>(iq::iq3xxs_grid[q3[2 * l + 1]]) << 32;
        for (int j = 0; j < 8; ++j) *dst++ = db * grid_byte(g, j) * ((signs >> j) & 1 ? -1.f : 1.f);
      }
    }
  }
}

float vec_dot_iq3_xxs_q8_K(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq3_xxs*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    const uint8_t* q3 = x[i].qs;
    int32_t bsum = 0;
    for (int ib = 0; ib < QK_K / 32; ++ib, q3 += 8) {
      const uint32_t aux = iq::load_u32(x[i].qs + QK_K / 4 + 4 * ib);
      int32_t sumi = 0;
      for (int l = 0; l < 4; ++l, q8 += 8) {
        const uint8_t signs = ksigns_iq2xs[(aux >> (7 * l)) & 127];
        const uint64_t g = iq::iq3xxs_grid[q3[2 * l]] | static_cast<uint64_t>(iq::iq3xxs_grid[q3[2 * l + 1]]) << 32;
        for (int j = 0; j < 8; ++j) sumi += grid_byte(g, j) * q8[j] * ((signs >> j) & 1 ? -1 : 1);
      }
      bsum += sumi * static_cast<int32_t>(2 * (aux >> 28) + 1);
    }
    sumf += fp16_to_f32(x[i].d) * y[i].d * static_cast<float>(bsum);
  }
  return 0.25f * sumf;
}

// AVX2 (iq::signed_grid_avx2): 4-value grid entries and ±1 sign bytes by scalar loads.
struct Iq3xxsAvx2 : iq::SignBytes {
  using Block = block_iq3_xxs;
  static constexpr float kFactor = 0.25f;
  MOEBOX_TARGET_AVX2 static iq::SignedGridStep2 step(const Block& b, int ib) {
    const uint32_t* grid = iq::iq3xxs_grid;
    const uint64_t* sgn = iq::ksigns_bytes;
    const uint8_t* q3 = b.qs + 8 * ib;
    const uint8_t* gas = b.qs + QK_K / 4 + 4 * ib;
    const uint32_t a1 = iq::load_u32(gas), a2 = iq::load_u32(gas + 4);
    return {{_mm256_set_epi32(grid[q3[7]], grid[q3[6]], grid[q3[5]], grid[q3[4]], grid[q3[3]], grid[q3[2]], grid[q3[1]],
                              grid[q3[0]]),
             _mm256_set_epi32(grid[q3[15]], grid[q3[14]], grid[q3[13]], grid[q3[12]], grid[q3[11]], grid[q3[10]],
                              grid[q3[9]], grid[q3[8]])},
            {_mm256_set_epi64x(sgn[(a1 >> 21) & 127], sgn[(a1 >> 14) & 127], sgn[(a1 >> 7) & 127], sgn[a1 & 127]),
             _mm256_set_epi64x(sgn[(a2 >> 21) & 127], sgn[(a2 >> 14) & 127], sgn[(a2 >> 7) & 127], sgn[a2 & 127])},
            {_mm256_set1_epi16(static_cast<int16_t>(2 * (a1 >> 28) + 1)),
             _mm256_set1_epi16(static_cast<int16_t>(2 * (a2 >> 28) + 1))}};
  }
};

// AVX-512 VNNI (iq::signed_grid_avx512): 4-value grid entries (bytes 0x04..0x3e) by one
// 32-bit gather per 64 weights, the 7-bit sign indices as a 64-bit mask.
struct Iq3xxsAvx512 {
  using Block = block_iq3_xxs;
  static constexpr float kFactor = 0.25f;
  static int prepare(const Block&) { return 0; }
  MOEBOX_TARGET_AVX512 static iq::SignedGridStep step(const Block& b, int, int k) {
    const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16 * k)));
    const __m512i g = _mm512_i32gather_epi32(idx, reinterpret_cast<const int*>(iq::iq3xxs_grid), 4);
    const uint8_t* gas = b.qs + QK_K / 4 + 8 * k;
    const uint32_t a1 = iq::load_u32(gas), a2 = iq::load_u32(gas + 4);
    return {g, iq::ksigns_mask(a1, a2), iq::pair_scales(2 * (a1 >> 28) + 1, 2 * (a2 >> 28) + 1)};
  }
};

float vec_dot_iq3_xxs_q8_K_avx2(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx2<Iq3xxsAvx2, 1>>(n, w, a);
}
float vec_dot_iq3_xxs_q8_K_avx512(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx512<Iq3xxsAvx512, 1>>(n, w, a);
}

// ---------------------------------------------------------------- IQ3_S

// Grid index of the k-th group of 4 weights (0..7) of sub-block ib.
static inline int iq3_s_index(const block_iq3_s& b, int ib, int k) {
  return b.qs[8 * ib + k] | (((b.qh[ib] >> k) & 1) << 8);
}

static inline int32_t iq3_s_scale(const block_iq3_s& b, int ib) {
  return 1 + 2 * ((b.scales[ib / 2] >> (4 * (ib % 2))) & 0xf);
}

void dequant_iq3_s(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const block_iq3_s*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int ib = 0; ib < QK_K / 32; ++ib) {
      const float db = d * static_cast<float>(iq3_s_scale(x[i], ib));
      const uint32_t signs = iq::load_u32(x[i].signs + 4 * ib);
      for (int k = 0; k < 8; ++k) {
        const uint32_t g = iq::iq3s_grid[iq3_s_index(x[i], ib, k)];
        for (int j = 0; j < 4; ++j) *dst++ = db * grid_byte(g, j) * ((signs >> (4 * k + j)) & 1 ? -1.f : 1.f);
      }
    }
  }
}

float vec_dot_iq3_s_q8_K(int64_t n, const void* w_row, const void* act_row) {
  const auto* x = static_cast<const block_iq3_s*>(w_row);
  const auto* y = static_cast<const block_q8_K*>(act_row);
  float sumf = 0.f;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const int8_t* q8 = y[i].qs;
    int32_t bsum = 0;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
      const uint32_t signs = iq::load_u32(x[i].signs + 4 * ib);
      int32_t sumi = 0;
      for (int k = 0; k < 8; ++k, q8 += 4) {
        const uint32_t g = iq::iq3s_grid[iq3_s_index(x[i], ib, k)];
        for (int j = 0; j < 4; ++j) sumi += grid_byte(g, j) * q8[j] * ((signs >> (4 * k + j)) & 1 ? -1 : 1);
      }
      bsum += sumi * iq3_s_scale(x[i], ib);
    }
    sumf += fp16_to_f32(x[i].d) * y[i].d * static_cast<float>(bsum);
  }
  return sumf;
}

// AVX2 (iq::signed_grid_avx2): 9-bit indices, grid entries by scalar loads, the explicit
// sign bits as masks.
struct Iq3sAvx2 : iq::SignMask {
  using Block = block_iq3_s;
  static constexpr float kFactor = 1.f;
  MOEBOX_TARGET_AVX2 static iq::SignedGridStep2 step(const Block& b, int ib) {
    const uint32_t* grid = iq::iq3s_grid;
    const uint8_t* qs = b.qs + 8 * ib;
    const uint8_t* signs = b.signs + 4 * ib;
    const uint32_t h1 = b.qh[ib], h2 = b.qh[ib + 1];
    auto g = [&](const uint8_t* q, uint32_t h, int k) { return grid[q[k] | ((h << (8 - k)) & 256)]; };
    return {{_mm256_set_epi32(g(qs, h1, 7), g(qs, h1, 6), g(qs, h1, 5), g(qs, h1, 4), g(qs, h1, 3), g(qs, h1, 2),
                              g(qs, h1, 1), g(qs, h1, 0)),
             _mm256_set_epi32(g(qs + 8, h2, 7), g(qs + 8, h2, 6), g(qs + 8, h2, 5), g(qs + 8, h2, 4), g(qs + 8, h2, 3),
                              g(qs + 8, h2, 2), g(qs + 8, h2, 1), g(qs + 8, h2, 0))},
            {iq::sign_bits_to_mask(iq::load_u32(signs)), iq::sign_bits_to_mask(iq::load_u32(signs + 4))},
            {_mm256_set1_epi16(static_cast<int16_t>(iq3_s_scale(b, ib))),
             _mm256_set1_epi16(static_cast<int16_t>(iq3_s_scale(b, ib + 1)))}};
  }
};

// AVX-512 VNNI (iq::signed_grid_avx512): 9-bit indices of 16 groups of 4 weights
// assembled as a vector and gathered (32-bit entries), the explicit sign bits as the mask.
struct Iq3sAvx512 {
  using Block = block_iq3_s;
  static constexpr float kFactor = 1.f;
  static int prepare(const Block&) { return 0; }
  MOEBOX_TARGET_AVX512 static iq::SignedGridStep step(const Block& b, int, int k) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // bit l of the 16 qh bits of sub-blocks 2k, 2k+1 is the high index bit of group l
    const __m512i hbit =
        _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(iq::load_u16(b.qh + 2 * k)), lane), _mm512_set1_epi32(1));
    const __m512i idx = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16 * k))),
                                        _mm512_slli_epi32(hbit, 8));
    uint64_t sign_bits;
    std::memcpy(&sign_bits, b.signs + 8 * k, 8);
    return {_mm512_i32gather_epi32(idx, reinterpret_cast<const int*>(iq::iq3s_grid), 4), sign_bits,
            iq::pair_scales(iq3_s_scale(b, 2 * k), iq3_s_scale(b, 2 * k + 1))};
  }
};

float vec_dot_iq3_s_q8_K_avx2(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx2<Iq3sAvx2, 1>>(n, w, a);
}
float vec_dot_iq3_s_q8_K_avx512(int64_t n, const void* w, const void* a) {
  return single_token<iq::signed_grid_avx512<Iq3sAvx512, 1>>(n, w, a);
}

extern const FormatOps kFormatIQ3_XXS = {
    "IQ3_XXS", GgmlType::IQ3_XXS, QK_K, sizeof(block_iq3_xxs), GgmlType::Q8_K, dequant_iq3_xxs,
    {vec_dot_iq3_xxs_q8_K, vec_dot_iq3_xxs_q8_K_avx2, vec_dot_iq3_xxs_q8_K_avx512, nullptr},
    {nullptr, iq::signed_grid_avx2<Iq3xxsAvx2, kMultiTokens>, iq::signed_grid_avx512<Iq3xxsAvx512, kMultiTokens>, nullptr},
    gemm_iq3_xxs_amx};
extern const FormatOps kFormatIQ3_S = {
    "IQ3_S", GgmlType::IQ3_S, QK_K, sizeof(block_iq3_s), GgmlType::Q8_K, dequant_iq3_s,
    {vec_dot_iq3_s_q8_K, vec_dot_iq3_s_q8_K_avx2, vec_dot_iq3_s_q8_K_avx512, nullptr},
    {nullptr, iq::signed_grid_avx2<Iq3sAvx2, kMultiTokens>, iq::signed_grid_avx512<Iq3sAvx512, kMultiTokens>, nullptr},
    gemm_iq3_s_amx};

}  // namespace moebox
