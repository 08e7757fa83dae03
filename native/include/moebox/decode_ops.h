// The small per-token operations of a decoder layer, fused: on the CPU each one
// replaces several torch ops (and their Python dispatch) in a decode step.
// All take float32 rows; each has a scalar path and an AVX2 path chosen by isa.
#pragma once
#include <cstdint>

#include "moebox/formats.h"
#include "moebox/thread_pool.h"

namespace moebox {

// y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w   for t < rows; x, y: rows x n (row strides given).
void rms_norm(const float* x, int64_t x_stride, const float* w, float eps, float* y, int64_t y_stride, int64_t rows,
              int64_t n, Isa isa);

// y[t, i] = silu(g[t, i]) * u[t, i] with g = gate_up[t, :n], u = gate_up[t, n:2n]; y: rows x n contiguous.
void silu_mul(const float* gate_up, int64_t gate_up_stride, float* y, int64_t rows, int64_t n, Isa isa);

// In place rotary embedding of x [tokens, heads, dim] (strides in floats; dim contiguous).
// cos, sin: [positions, dim / 2] tables; token t uses row pos[t]. Interleaved pairs
// (x[2i], x[2i+1]) or neox halves (x[i], x[i + dim/2]).
void rope_inplace(float* x, int64_t tokens, int64_t heads, int64_t dim, int64_t token_stride, int64_t head_stride,
                  const float* cos, const float* sin, const int64_t* pos, bool interleaved);

// Attention of one query token over `len` cached positions (grouped-query):
// out[h] = softmax(scale * q[h] . k[s, h / rep]) @ v[s, h / rep], rep = heads / kv_heads.
// q: heads x dim contiguous; k, v: [len, kv_heads, dim] with token strides k_stride / v_stride
// (floats or fp16 values, kv_fp16); out: heads x dim contiguous.
void attend_one(const float* q, int64_t heads, int64_t kv_heads, int64_t dim, const void* k, int64_t k_stride,
                const void* v, int64_t v_stride, bool kv_fp16, int64_t len, float scale, float* out, ThreadPool& pool,
                Isa isa);

// One decode step of grouped-query attention on a fused q|k|v row (heads + 2 * kv_heads
// vectors of dim): rotates q and k in place (cos/sin rows of position pos, as rope_inplace),
// writes k and v as cache entry `len` of k_cache / v_cache ([>= len + 1, kv_heads, dim],
// contiguous; float32 or fp16 rounded to nearest even), then attend_one over len + 1 entries.
void rope_cache_attend(float* qkv, int64_t heads, int64_t kv_heads, int64_t dim, const float* cos, const float* sin,
                       int64_t pos, bool interleaved, void* k_cache, void* v_cache, bool kv_fp16, int64_t len,
                       float scale, float* out, ThreadPool& pool, Isa isa);

}  // namespace moebox
