#include "moebox/amx.h"

#include <cstring>

namespace moebox {

void amx_pack_q8_K(int64_t n, const void* const* rows, int n_tokens, AmxActBlock* dst) {
  const int64_t blocks = n / QK_K;
  for (int64_t i = 0; i < blocks; ++i) {
    AmxActBlock& b = dst[i];
    std::memset(&b, 0, sizeof(b));
    for (int t = 0; t < n_tokens; ++t) {
      const block_q8_K& y = static_cast<const block_q8_K*>(rows[t])[i];
      for (int k4 = 0; k4 < QK_K / 4; ++k4) std::memcpy(b.qs[k4][t], y.qs + 4 * k4, 4);
      b.d[t] = y.d;
      for (int p = 0; p < QK_K / 32; ++p) {
        b.bsums16[p][t][0] = y.bsums[2 * p];
        b.bsums16[p][t][1] = y.bsums[2 * p + 1];
      }
      for (int p = 0; p < QK_K / 64; ++p) {
        b.bsums32[p][t][0] = static_cast<int16_t>(y.bsums[4 * p] + y.bsums[4 * p + 1]);
        b.bsums32[p][t][1] = static_cast<int16_t>(y.bsums[4 * p + 2] + y.bsums[4 * p + 3]);
      }
    }
  }
}

}  // namespace moebox
