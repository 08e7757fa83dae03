// Routed experts of a MoE layer, computed from the stacked GGUF expert tensors:
//   out[t] = sum_j w[t,j] * down_e(silu(gate_e x[t]) * up_e x[t]),  e = ids[t,j].
#pragma once
#include <cstdint>

#include "moebox/formats.h"
#include "moebox/matmul.h"
#include "moebox/thread_pool.h"

namespace moebox {

// One stacked expert tensor, GGUF ggml order [experts, rows, cols]: expert e's
// matrix (rows x cols, rows contiguous) starts at data + e * expert_bytes.
struct ExpertTensor {
  const FormatOps* format = nullptr;
  const uint8_t* data = nullptr;
  int64_t experts = 0, rows = 0, cols = 0;
  int64_t expert_bytes() const { return rows * row_bytes(*format, cols); }
};

struct MoeWeights {
  ExpertTensor gate, up;  // [experts, inter, hidden]
  ExpertTensor down;      // [experts, hidden, inter]
};

// x: T x hidden; ids, weights: T x k (ids validated by the caller to lie in [0, experts));
// out: T x hidden f32, contiguous. Each selected expert's weights are read once per
// call, whatever the number of tokens routed to it; zero weights are skipped.
void moe_forward(const MoeWeights& m, const ActivationRows& x, const int32_t* ids, const float* weights, int64_t k,
                 float* out, ThreadPool& pool, Isa isa);

}  // namespace moebox
