// y = W x for a weight matrix in any registered format.
#pragma once
#include <cstdint>
#include <vector>

#include "moebox/formats.h"
#include "moebox/thread_pool.h"

namespace moebox {

// Activation rows as the caller hands them in: f32 or bf16, row-major, `stride` elements apart.
struct ActivationRows {
  const void* data = nullptr;
  bool bf16 = false;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;
  const float* row_f32(int64_t t, float* scratch) const;  // f32 view of row t (converts bf16 into scratch)
};

// Quantize activation rows into `act_type` blocks: dst [rows, act_row_bytes(act_type, cols)].
void quantize_activations(const ActivationRows& x, GgmlType act_type, uint8_t* dst, ThreadPool& pool, Isa isa);

// W: rows x cols in format f (rows contiguous, row_bytes(f, cols) apart); x: T x cols;
// y: T x rows f32 (row stride y_stride). Activations are quantized once; rows are
// split over the pool's threads and tokens blocked so weights stream from RAM once.
void matmul(const FormatOps& f, const uint8_t* w, int64_t rows, const ActivationRows& x, float* y, int64_t y_stride,
            ThreadPool& pool, Isa isa);

// Packs n_tokens Q8_K activation rows (act_bytes apart; token t is row order[t],
// or row t without an order) into amx_groups(n_tokens) groups of AmxActBlocks.
void amx_pack_activations(int64_t n, const uint8_t* act, int64_t act_bytes, const int32_t* order, int64_t n_tokens,
                          AmxActBlock* dst);

// Hardware prefetchers stop at 4 KiB page borders, and a weight row of a few KiB
// starts on a new page: ask for the next row (up to 4 KiB of it) while this one is
// dotted. On the Xeon, 4 KiB instead of the first 1 KiB took the Q4_K GEMV (7168
// columns, 16 threads, out of cache) from 64-65 % to 78-80 % of read bandwidth.
inline void prefetch_row_start(const uint8_t* row, int64_t row_bytes) {
  const int64_t n = row_bytes < 4096 ? row_bytes : 4096;
  for (int64_t off = 0; off < n; off += 64) __builtin_prefetch(row + off, 0, 3);
}

// Whether a decode loop should call prefetch_row_start for rows of row_bytes. Measured
// out of cache, one thread, GEMV (see README): on the Xeon the prefetch makes rows of
// 0.4-2 KiB 1.3-1.8x faster; on Zen 3 it makes rows of 1 KiB or more 1.3-1.6x slower
// (there the CPU's own stream prefetcher does better alone) and short rows ~10 % faster.
bool prefetch_next_row(int64_t row_bytes);

// Dequantize n elements (multiple of block_elems) to f32 or bf16 using the pool.
void dequantize(const FormatOps& f, const uint8_t* src, int64_t n, float* dst_f32, uint16_t* dst_bf16, ThreadPool& pool);

}  // namespace moebox
