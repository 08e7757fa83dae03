// STREAM-like memory read bandwidth on the kernel thread pool: the ceiling a
// weight-streaming GEMV is compared with.
#pragma once
#include <cstdint>

#include "moebox/thread_pool.h"

namespace moebox {

// Reads `bytes` of `data` (use a buffer far larger than the last-level cache)
// `repeats` times with all pool threads; returns the best pass in GB/s (1e9 B/s).
double read_bandwidth_gbs(const uint8_t* data, int64_t bytes, int repeats, ThreadPool& pool);

}  // namespace moebox
