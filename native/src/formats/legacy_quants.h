// ggml's legacy 32-element block formats, byte layouts as in ggml-common.h.
// Element j of a block: low nibble of qs[j] for j < 16, high nibble of qs[j-16] otherwise.
#pragma once
#include <cstdint>

#include "moebox/formats.h"

namespace moebox {

struct block_q4_0 {  // x = d * (q - 8)
  uint16_t d;
  uint8_t qs[QK8_0 / 2];
};
struct block_q4_1 {  // x = d * q + m
  uint16_t d, m;
  uint8_t qs[QK8_0 / 2];
};
struct block_q5_0 {  // x = d * (q - 16), bit 4 of element j = bit j of qh
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[QK8_0 / 2];
};
struct block_q5_1 {  // x = d * q + m
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[QK8_0 / 2];
};
// Q8_0 weights use the activation block itself: x = d * qs.
static_assert(sizeof(block_q4_0) == 18 && sizeof(block_q4_1) == 20, "legacy layout");
static_assert(sizeof(block_q5_0) == 22 && sizeof(block_q5_1) == 24, "legacy layout");

}  // namespace moebox
