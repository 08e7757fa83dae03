// One decode token through a whole decoder layer in one call: the layer's kernels
// run back to back on the kernel threads, with no Python between them. On a small
// CPU a decode step is many kernels of a few microseconds each; the Python and the
// thread hand-overs between them cost as much as the kernels.
#pragma once
#include <cstdint>

#include "moebox/formats.h"
#include "moebox/moe.h"
#include "moebox/thread_pool.h"

namespace moebox {

// A weight matrix in a GGUF format: rows x cols, rows contiguous.
struct WeightMatrix {
  const FormatOps* format = nullptr;
  const uint8_t* data = nullptr;
  int64_t rows = 0, cols = 0;
};

// Routed experts behind a softmax router (Qwen2/3-MoE without shared experts):
// p = softmax(router x); the top_k experts by p, weights p (divided by their sum if
// normalize), times scale.
struct DecodeMoe {
  WeightMatrix router;  // F32 [experts, hidden]
  MoeWeights experts;
  int64_t top_k = 0;
  bool normalize = false;
  float scale = 1.f;
};

// A pre-norm decoder layer with grouped-query attention (llama, qwen2/3 dense and MoE):
//   h = x + o(attention(rope(qkv(norm(x)))))
//   out = h + ffn(norm(h)),  ffn = down(silu(gate h) * up h) or the routed experts.
struct DecodeLayerSpec {
  int64_t hidden = 0, heads = 0, kv_heads = 0, dim = 0;
  float eps = 0.f, scale = 0.f;
  bool interleaved = false;
  const float* attn_norm = nullptr;  // [hidden]
  const float* ffn_norm = nullptr;   // [hidden]
  const float* q_norm = nullptr;     // per-head [dim] (qwen3), or nullptr
  const float* k_norm = nullptr;
  float qk_eps = 0.f;
  WeightMatrix qkv;      // [(heads + 2 kv_heads) dim, hidden], q | k | v rows
  WeightMatrix o;        // [hidden, heads dim]
  WeightMatrix gate_up;  // [2 inter, hidden], gate rows first (dense FFN)
  WeightMatrix down;     // [hidden, inter]
  const DecodeMoe* moe = nullptr;  // instead of gate_up / down
};

// x_out = the layer applied to x_in (both [hidden]; they may be the same buffer).
// The token's k and v go to cache entry len of k_cache / v_cache ([>= len + 1,
// kv_heads, dim], float32 or fp16) and attention runs over entries 0..len; its
// rotation uses row pos of the cos / sin tables [positions, dim / 2].
void decode_layer_step(const DecodeLayerSpec& s, const float* x_in, float* x_out, const float* cos, const float* sin,
                       int64_t pos, void* k_cache, void* v_cache, bool kv_fp16, int64_t len, ThreadPool& pool, Isa isa);

// The top k of a softmax over logits [n]: ids (largest first, ties to the lower index)
// and their probabilities.
void softmax_top_k(const float* logits, int64_t n, int64_t k, int32_t* ids, float* probs);

}  // namespace moebox
