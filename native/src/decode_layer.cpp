#include "moebox/decode_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "moebox/decode_ops.h"
#include "moebox/matmul.h"

namespace moebox {

void softmax_top_k(const float* logits, int64_t n, int64_t k, int32_t* ids, float* probs) {
  thread_local std::vector<int32_t> order;
  order.resize(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  // softmax is monotonic: the top k of the logits are the top k of the probabilities
  const float mx = logits[order[0]];
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(logits[i] - mx);
  for (int64_t j = 0; j < k; ++j) {
    ids[j] = order[j];
    probs[j] = std::exp(logits[order[j]] - mx) / sum;
  }
}

void decode_layer_step(const DecodeLayerSpec& s, const float* x_in, float* x_out, const float* cos, const float* sin,
                       int64_t pos, void* k_cache, void* v_cache, bool kv_fp16, int64_t len, ThreadPool& pool, Isa isa) {
  const int64_t hidden = s.hidden, dim = s.dim;
  const int64_t qkv_n = (s.heads + 2 * s.kv_heads) * dim, attn_n = s.heads * dim;
  const int64_t inter = s.moe ? 0 : s.gate_up.rows / 2;
  const int64_t experts = s.moe ? s.moe->router.rows : 0;
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(2 * hidden + qkv_n + attn_n + 3 * inter + experts));
  float* const xn = scratch.data();
  float* const delta = xn + hidden;
  float* const qkv = delta + hidden;
  float* const attn = qkv + qkv_n;
  float* const gate_up = attn + attn_n;
  float* const act = gate_up + 2 * inter;
  float* const logits = act + inter;

  auto one_row = [](const float* v, int64_t n) {
    ActivationRows r;
    r.data = v;
    r.rows = 1;
    r.cols = n;
    r.stride = n;
    return r;
  };
  auto mm = [&](const WeightMatrix& w, const float* in, float* out) {
    matmul(*w.format, w.data, w.rows, one_row(in, w.cols), out, w.rows, pool, isa);
  };
  auto add = [&](float* x, const float* d) {
    for (int64_t i = 0; i < hidden; ++i) x[i] += d[i];
  };
  if (x_out != x_in) std::memcpy(x_out, x_in, static_cast<size_t>(hidden) * sizeof(float));

  // attention
  rms_norm(x_out, hidden, s.attn_norm, s.eps, xn, hidden, 1, hidden, isa);
  mm(s.qkv, xn, qkv);
  if (s.q_norm) {
    rms_norm(qkv, dim, s.q_norm, s.qk_eps, qkv, dim, s.heads, dim, isa);
    rms_norm(qkv + s.heads * dim, dim, s.k_norm, s.qk_eps, qkv + s.heads * dim, dim, s.kv_heads, dim, isa);
  }
  rope_cache_attend(qkv, s.heads, s.kv_heads, dim, cos, sin, pos, s.interleaved, k_cache, v_cache, kv_fp16, len,
                    s.scale, attn, pool, isa);
  mm(s.o, attn, delta);
  add(x_out, delta);

  // feed-forward
  rms_norm(x_out, hidden, s.ffn_norm, s.eps, xn, hidden, 1, hidden, isa);
  if (s.moe) {
    const DecodeMoe& m = *s.moe;
    mm(m.router, xn, logits);
    thread_local std::vector<int32_t> ids;
    thread_local std::vector<float> w;
    ids.resize(static_cast<size_t>(m.top_k));
    w.resize(static_cast<size_t>(m.top_k));
    softmax_top_k(logits, experts, m.top_k, ids.data(), w.data());
    if (m.normalize) {
      const float sum = std::accumulate(w.begin(), w.end(), 0.f) + 1e-20f;
      for (float& v : w) v /= sum;
    }
    if (m.scale != 1.f)
      for (float& v : w) v *= m.scale;
    moe_forward(m.experts, one_row(xn, hidden), ids.data(), w.data(), m.top_k, delta, pool, isa);
  } else {
    mm(s.gate_up, xn, gate_up);
    silu_mul(gate_up, 2 * inter, act, 1, inter, isa);
    mm(s.down, act, delta);
  }
  add(x_out, delta);
}

}  // namespace moebox
