// Emulated AMX kernels (run.sh) against the float64 reference of each format's dequantizer:
// random blocks plus corner blocks (largest byte-plane products) in row 0.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>
#include "moebox/amx.h"
#include "moebox/formats.h"
namespace moebox {
extern const FormatOps kFormatQ2_K, kFormatQ3_K, kFormatQ4_K, kFormatQ6_K, kFormatIQ4_XS, kFormatIQ1_S, kFormatIQ1_M,
    kFormatIQ2_XXS, kFormatIQ2_XS, kFormatIQ2_S, kFormatIQ3_XXS, kFormatIQ3_S;
}
using namespace moebox;
int main() {
  std::mt19937 rng(1);
  const FormatOps* fs[] = {&kFormatQ2_K,   &kFormatQ3_K,    &kFormatQ4_K,  &kFormatQ6_K,   &kFormatIQ4_XS, &kFormatIQ1_S,
                           &kFormatIQ1_M,  &kFormatIQ2_XXS, &kFormatIQ2_XS, &kFormatIQ2_S, &kFormatIQ3_XXS, &kFormatIQ3_S};
  // fp16 scale fields (IQ1_M: -2, spread over the top nibbles of its scale words at 48..55)
  const int d_off[][2] = {{80, 82}, {108, -1}, {0, 2}, {208, -1}, {0, -1}, {0, -1},
                          {-2, -1}, {0, -1},   {0, -1}, {0, -1},  {0, -1}, {0, -1}};
  // Row 0's largest scales (and IQ1 deltas -1/8): byte range set to 0xFF, per IQ format.
  const int top_scales[][2] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {34, 50},
                               {32, 48}, {2, 66}, {66, 74}, {74, 82}, {66, 98}, {106, 110}};
  const int n_formats = sizeof(fs) / sizeof(fs[0]);
  int bad = 0;
  for (int fi = 0; fi < n_formats; ++fi) {
    const FormatOps& f = *fs[fi];
    for (int tokens : {5, 16, 37, 70}) {
      const int n = 512, rows = 37, nb = n / 256;
      std::vector<uint8_t> w(rows * nb * f.block_bytes);
      for (auto& b : w) b = rng() & 255;
      for (int blk = 0; blk < rows * nb; ++blk)
        for (int j = 0; j < 2; ++j)
          if (d_off[fi][j] != -1) {
            uint16_t h = f32_to_fp16(std::ldexp(1.0f + (rng() % 100) / 100.f, -(int)(rng() % 6)) * ((rng() & 1) ? 1 : -1));
            if (d_off[fi][j] >= 0) {
              std::memcpy(&w[blk * f.block_bytes + d_off[fi][j]], &h, 2);
            } else {  // IQ1_M: nibble k of h into the top nibble of scale word k
              uint8_t* sc = &w[blk * f.block_bytes + 48];
              for (int k = 0; k < 4; ++k) sc[2 * k + 1] = static_cast<uint8_t>((sc[2 * k + 1] & 0x0f) | (((h >> (4 * k)) & 0xf) << 4));
            }
          }
      // corner cases in row 0: Q6_K scales -128 with q = 0 (4096); Q3_K scales 0 (-32) with q = 0, hbit 0 (-4)
      if (fi == 3) { for (int b = 0; b < nb; ++b) { uint8_t* x = &w[b * f.block_bytes]; std::memset(x, 0, 192); std::memset(x + 192, 0x80, 16); } }
      if (fi == 1) { for (int b = 0; b < nb; ++b) { uint8_t* x = &w[b * f.block_bytes]; std::memset(x, 0, 108); } }
      if (top_scales[fi][1] > 0)
        for (int b = 0; b < nb; ++b) {
          uint8_t* x = &w[b * f.block_bytes];
          for (int k = top_scales[fi][0]; k < top_scales[fi][1]; ++k) x[k] = 0xFF;
          if (fi == 6) for (int k = 0; k < 4; ++k) x[48 + 2 * k] = 0xFF, x[49 + 2 * k] |= 0x0F;  // IQ1_M scales 7, d kept
        }
      std::vector<block_q8_K> act(tokens * nb);
      for (auto& b : act) {
        b.d = 0.01f + (rng() % 100) / 1000.f;
        for (int i = 0; i < 256; ++i) b.qs[i] = (int8_t)((int)(rng() % 255) - 127);
        for (int j = 0; j < 16; ++j) { int s = 0; for (int i = 0; i < 16; ++i) s += b.qs[16 * j + i]; b.bsums[j] = s; }
      }
      const int groups = amx_groups(tokens);
      std::vector<AmxActBlock> packed(groups * nb);
      for (int g = 0; g < groups; ++g) {
        const void* rp[16];
        int cnt = std::min(16, tokens - 16 * g);
        for (int t = 0; t < cnt; ++t) rp[t] = &act[(16 * g + t) * nb];
        amx_pack_q8_K(n, rp, cnt, &packed[g * nb]);
      }
      std::vector<float> y(tokens * rows, NAN);
      f.amx_gemm(n, w.data(), rows, packed.data(), tokens, y.data(), rows);
      std::vector<float> wd(n);
      double worst = 0;
      for (int r = 0; r < rows; ++r) {
        f.dequant_f32(&w[r * nb * f.block_bytes], wd.data(), n);
        for (int t = 0; t < tokens; ++t) {
          double ref = 0, mag = 0;
          for (int i = 0; i < n; ++i) {
            double a = act[t * nb + i / 256].d * act[t * nb + i / 256].qs[i % 256];
            ref += wd[i] * a; mag += std::fabs(wd[i] * a);
          }
          double err = std::fabs(y[t * rows + r] - ref) / (mag + 1e-30);
          if (!(err <= 2e-5)) { if (bad < 10) printf("%s T=%d r=%d t=%d y=%g ref=%g\n", f.name, tokens, r, t, y[t*rows+r], ref); ++bad; }
          worst = std::max(worst, err);
        }
      }
      printf("%s tokens %d: worst |y-ref|/sum|w x| %.2e\n", f.name, tokens, worst);
    }
  }
  printf(bad ? "FAIL %d\n" : "OK\n", bad);
  return bad != 0;
}
