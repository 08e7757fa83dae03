#include "moebox/matmul.h"

#include <algorithm>
#include <cstring>

#include "moebox/amx.h"
#include "moebox/cpu_features.h"

namespace moebox {
namespace {

// Tokens handled per pass over a row chunk: their quantized activations (~8 KiB
// each for 7168 columns) stay in L2 while each weight row is reused from L1.
constexpr int64_t kTokenBlock = 32;
// Upper bound on the weight bytes one task streams, so a chunk stays in L2.
constexpr int64_t kChunkBytes = 128 * 1024;

// Rows per AMX task: whole 16-row tiles, about 4 tasks per thread.
int64_t amx_row_chunk(int64_t rows, int threads) {
  const int64_t per_task = (rows + threads * 4 - 1) / (threads * 4);
  return std::max<int64_t>(16, (per_task + 15) / 16 * 16);
}

}  // namespace

bool prefetch_next_row(int64_t row_bytes) {
  static const bool amd = cpu_features().amd;
  return !amd || row_bytes < 1024;
}

void amx_pack_activations(int64_t n, const uint8_t* act, int64_t act_bytes, const int32_t* order, int64_t n_tokens,
                          AmxActBlock* dst) {
  const int64_t nb = n / QK_K;
  for (int64_t g = 0; g < amx_groups(n_tokens); ++g) {
    const void* rows[kAmxTokens];
    const int count = static_cast<int>(std::min<int64_t>(kAmxTokens, n_tokens - g * kAmxTokens));
    for (int t = 0; t < count; ++t) {
      const int64_t idx = g * kAmxTokens + t;
      rows[t] = act + (order ? order[idx] : idx) * act_bytes;
    }
    amx_pack_q8_K(n, rows, count, dst + g * nb);
  }
}

const float* ActivationRows::row_f32(int64_t t, float* scratch) const {
  if (!bf16) return static_cast<const float*>(data) + t * stride;
  const auto* src = static_cast<const uint16_t*>(data) + t * stride;
  for (int64_t i = 0; i < cols; ++i) scratch[i] = bf16_to_f32(src[i]);
  return scratch;
}

void quantize_activations(const ActivationRows& x, GgmlType act_type, uint8_t* dst, ThreadPool& pool, Isa isa) {
  const int64_t bytes = act_row_bytes(act_type, x.cols);
  auto one = [&](int64_t t, std::vector<float>& scratch) {
    quantize_act_row(act_type, x.row_f32(t, scratch.data()), dst + t * bytes, x.cols, isa);
  };
  if (x.rows == 1) {
    std::vector<float> scratch(x.bf16 ? x.cols : 0);
    one(0, scratch);
    return;
  }
  pool.parallel_for(x.rows, [&](int64_t t, int) {
    thread_local std::vector<float> scratch;
    if (x.bf16 && static_cast<int64_t>(scratch.size()) < x.cols) scratch.resize(x.cols);
    one(t, scratch);
  });
}

void matmul(const FormatOps& f, const uint8_t* w, int64_t rows, const ActivationRows& x, float* y, int64_t y_stride,
            ThreadPool& pool, Isa isa) {
  const int64_t cols = x.cols, T = x.rows;
  const int64_t w_row_bytes = row_bytes(f, cols);
  const VecDotFn dot = select_vec_dot(f, isa);

  // F32 activations in the caller's contiguous f32 buffer are used as they are.
  const bool direct = f.vec_dot_type == GgmlType::F32 && !x.bf16;
  const int64_t a_bytes = direct ? x.stride * 4 : act_row_bytes(f.vec_dot_type, cols);
  std::vector<uint8_t> act_buf;
  const uint8_t* act = static_cast<const uint8_t*>(x.data);
  if (!direct) {
    act_buf.resize(static_cast<size_t>(T * a_bytes));
    quantize_activations(x, f.vec_dot_type, act_buf.data(), pool, isa);
    act = act_buf.data();
  }

  const AmxGemmFn amx = T >= kAmxMinTokens ? select_amx_gemm(f, isa) : nullptr;
  if (amx) {
    // Activations once in tile layout (a group of 16 tokens per task), then tiles of rows.
    const int64_t nb = cols / QK_K, groups = amx_groups(T);
    std::vector<AmxActBlock> packed(static_cast<size_t>(groups * nb));
    pool.parallel_for(groups, [&](int64_t g, int) {
      const int64_t t0 = g * kAmxTokens;
      amx_pack_activations(cols, act + t0 * a_bytes, a_bytes, nullptr, std::min<int64_t>(kAmxTokens, T - t0),
                           packed.data() + g * nb);
    });
    const int64_t chunk = amx_row_chunk(rows, pool.size());
    pool.parallel_for((rows + chunk - 1) / chunk, [&](int64_t c, int) {
      const int64_t r0 = c * chunk;
      amx(cols, w + r0 * w_row_bytes, std::min(chunk, rows - r0), packed.data(), T, y + r0, y_stride);
    });
    return;
  }

  const int64_t threads = pool.size();
  int64_t chunk = std::max<int64_t>(1, rows / (threads * 8));
  chunk = std::min(chunk, std::max<int64_t>(1, kChunkBytes / std::max<int64_t>(1, w_row_bytes)));
  const int64_t n_chunks = (rows + chunk - 1) / chunk;
  const VecDotMultiFn multi = select_vec_dot_multi(f, isa);
  const VecDotPairFn pair = T == 1 ? select_vec_dot_pair(f, isa) : nullptr;
  const bool prefetch = prefetch_next_row(w_row_bytes);
  pool.parallel_for(n_chunks, [&](int64_t c, int) {
    const int64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk);
    if (pair) {  // decode: two rows per call share the activation loads
      int64_t r = r0;
      for (; r + 2 <= r1; r += 2) {
        const uint8_t* wr = w + r * w_row_bytes;
        if (prefetch && r + 2 < r1) prefetch_row_start(wr + 2 * w_row_bytes, w_row_bytes);
        if (prefetch && r + 3 < r1) prefetch_row_start(wr + 3 * w_row_bytes, w_row_bytes);
        pair(cols, wr, wr + w_row_bytes, act, &y[r]);
      }
      if (r < r1) y[r] = dot(cols, w + r * w_row_bytes, act);
      return;
    }
    for (int64_t t0 = 0; t0 < T; t0 += kTokenBlock) {
      const int64_t t1 = std::min(T, t0 + kTokenBlock);
      for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* wr = w + r * w_row_bytes;
        if (prefetch && r + 1 < r1) prefetch_row_start(wr + w_row_bytes, w_row_bytes);
        int64_t t = t0;
        if (multi) {
          for (; t + kMultiTokens <= t1; t += kMultiTokens) {
            const void* a[kMultiTokens];
            float o[kMultiTokens];
            for (int k = 0; k < kMultiTokens; ++k) a[k] = act + (t + k) * a_bytes;
            multi(cols, wr, a, o);
            for (int k = 0; k < kMultiTokens; ++k) y[(t + k) * y_stride + r] = o[k];
          }
        }
        for (; t < t1; ++t) y[t * y_stride + r] = dot(cols, wr, act + t * a_bytes);
      }
    }
  });
}

void dequantize(const FormatOps& f, const uint8_t* src, int64_t n, float* dst_f32, uint16_t* dst_bf16, ThreadPool& pool) {
  // Tasks of whole blocks, about 64 Ki elements each.
  const int64_t blocks = n / f.block_elems;
  const int64_t per_task = std::max<int64_t>(1, 65536 / f.block_elems);
  const int64_t n_tasks = (blocks + per_task - 1) / per_task;
  pool.parallel_for(n_tasks, [&](int64_t task, int) {
    const int64_t b0 = task * per_task, b1 = std::min(blocks, b0 + per_task);
    const int64_t e0 = b0 * f.block_elems, count = (b1 - b0) * f.block_elems;
    const uint8_t* s = src + b0 * f.block_bytes;
    if (dst_f32) {
      f.dequant_f32(s, dst_f32 + e0, count);
    } else {
      thread_local std::vector<float> tmp;
      tmp.resize(static_cast<size_t>(count));
      f.dequant_f32(s, tmp.data(), count);
      for (int64_t i = 0; i < count; ++i) dst_bf16[e0 + i] = f32_to_bf16(tmp[i]);
    }
  });
}

}  // namespace moebox
