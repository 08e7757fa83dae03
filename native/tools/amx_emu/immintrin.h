// Test shim for native/tools/amx_emu/run.sh: AVX-512/AVX2/F16C through SIMDe, AMX tiles
// emulated in scalar code (TDPBUSD/TDPBSSD on 16 x 64-byte tiles), for CPUs without AMX.
#pragma once
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/avx2.h>
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>
#include <cstdint>
#include <cstring>
inline float _cvtsh_ss(uint16_t h) {
  return simde_mm_cvtss_f32(simde_mm_cvtph_ps(simde_mm_cvtsi32_si128(h)));
}
#include <cmath>
inline uint16_t moebox_emu_f32_to_fp16(float f) {
  return simde_mm_extract_epi16(simde_mm_cvtps_ph(simde_mm_set_ss(f), 0), 0);
}
struct TileEmu { alignas(64) uint8_t d[16][64]; };
inline TileEmu g_tile[8];
inline void tile_emu_load(int t, const void* p, long stride) {
  for (int r = 0; r < 16; ++r) std::memcpy(g_tile[t].d[r], static_cast<const uint8_t*>(p) + r * stride, 64);
}
inline void tile_emu_store(int t, void* p, long stride) {
  for (int r = 0; r < 16; ++r) std::memcpy(static_cast<uint8_t*>(p) + r * stride, g_tile[t].d[r], 64);
}
template <bool ASigned>
inline void tile_emu_dp(int c, int a, int b) {
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      int32_t acc;
      std::memcpy(&acc, &g_tile[c].d[m][4 * n], 4);
      for (int k = 0; k < 16; ++k)
        for (int i = 0; i < 4; ++i) {
          const int av = ASigned ? static_cast<int8_t>(g_tile[a].d[m][4 * k + i]) : g_tile[a].d[m][4 * k + i];
          acc += av * static_cast<int8_t>(g_tile[b].d[k][4 * n + i]);
        }
      std::memcpy(&g_tile[c].d[m][4 * n], &acc, 4);
    }
}
#define _tile_loadconfig(p) ((void)(p))
#define _tile_release() ((void)0)
#define _tile_zero(t) std::memset(g_tile[t].d, 0, 1024)
#define _tile_loadd(t, p, s) tile_emu_load(t, p, s)
#define _tile_stored(t, p, s) tile_emu_store(t, p, s)
#define _tile_dpbusd(c, a, b) tile_emu_dp<false>(c, a, b)
#define _tile_dpbssd(c, a, b) tile_emu_dp<true>(c, a, b)
#define _mm512_shuffle_i64x2(a, b, imm) simde_mm512_shuffle_i32x4(a, b, imm)
inline simde__m512 _mm512_cvtepi32_ps(simde__m512i a) {
  alignas(64) int32_t i[16];
  alignas(64) float f[16];
  simde_mm512_store_si512(i, a);
  for (int k = 0; k < 16; ++k) f[k] = static_cast<float>(i[k]);
  return simde_mm512_load_ps(f);
}
#ifndef _MM_FROUND_NO_EXC
#define _MM_FROUND_NO_EXC 8
#endif
inline uint16_t _cvtss_sh(float f, int) { return moebox_emu_f32_to_fp16(f); }
typedef int _MM_PERM_ENUM;
inline simde__m512i _mm512_shuffle_epi32(simde__m512i a, int imm) {
  alignas(64) int32_t s[16], d[16];
  simde_mm512_store_si512(s, a);
  for (int l = 0; l < 4; ++l)
    for (int k = 0; k < 4; ++k) d[4 * l + k] = s[4 * l + ((imm >> (2 * k)) & 3)];
  return simde_mm512_load_si512(d);
}
inline uint64_t _pdep_u64(uint64_t src, uint64_t mask) {
  uint64_t r = 0;
  for (uint64_t bb = 1; mask; bb <<= 1) { if (src & bb) r |= mask & -mask; mask &= mask - 1; }
  return r;
}
inline simde__m512i _mm512_i32gather_epi64(simde__m256i idx, const void* base, int scale) {
  alignas(32) int32_t i[8]; alignas(64) int64_t o[8];
  simde_mm256_store_si256(reinterpret_cast<simde__m256i*>(i), idx);
  for (int k = 0; k < 8; ++k) std::memcpy(&o[k], static_cast<const char*>(base) + (int64_t)i[k] * scale, 8);
  return simde_mm512_load_si512(o);
}
// What the IQ formats' decoders use beyond SIMDe 0.7.
typedef uint8_t __mmask8;
inline uint64_t _pext_u64(uint64_t src, uint64_t mask) {
  uint64_t r = 0;
  for (uint64_t bb = 1; mask; bb <<= 1) { if (src & mask & -mask) r |= bb; mask &= mask - 1; }
  return r;
}
inline simde__m512i _mm512_i32gather_epi32(simde__m512i idx, const void* base, int scale) {
  alignas(64) int32_t i[16], o[16];
  simde_mm512_store_si512(i, idx);
  for (int k = 0; k < 16; ++k) std::memcpy(&o[k], static_cast<const char*>(base) + (int64_t)i[k] * scale, 4);
  return simde_mm512_load_si512(o);
}
inline simde__m512i _mm512_cvtepu8_epi16(simde__m256i a) {
  alignas(32) uint8_t s[32]; alignas(64) uint16_t d[32];
  simde_mm256_store_si256(reinterpret_cast<simde__m256i*>(s), a);
  for (int k = 0; k < 32; ++k) d[k] = s[k];
  return simde_mm512_load_si512(d);
}
inline simde__m512i _mm512_cvtepu8_epi32(simde__m128i a) {
  alignas(16) uint8_t s[16]; alignas(64) uint32_t d[16];
  simde_mm_store_si128(reinterpret_cast<simde__m128i*>(s), a);
  for (int k = 0; k < 16; ++k) d[k] = s[k];
  return simde_mm512_load_si512(d);
}
inline float _mm512_reduce_add_ps(simde__m512 a) {
  alignas(64) float f[16];
  simde_mm512_store_ps(f, a);
  float r = 0;
  for (float v : f) r += v;
  return r;
}
