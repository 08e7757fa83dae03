// One persistent pool of worker threads per process, created on first use.
// Workers spin briefly after finishing a parallel region (the next one usually
// follows within microseconds during decode), then sleep on a condition
// variable: an idle process uses no CPU.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace moebox {

class ThreadPool {
 public:
  using TaskFn = void (*)(void* ctx, int64_t task, int thread);

  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(ctx, task, thread) for task in [0, n_tasks) on all threads, the
  // calling thread included (as thread 0); returns when all tasks are done.
  // Regions from different callers are serialized.
  void parallel_for(int64_t n_tasks, TaskFn fn, void* ctx);

  template <typename F>
  void parallel_for(int64_t n_tasks, F&& f) {
    using Fn = std::remove_reference_t<F>;
    parallel_for(
        n_tasks, [](void* c, int64_t task, int thread) { (*static_cast<Fn*>(c))(task, thread); },
        const_cast<void*>(static_cast<const void*>(&f)));
  }

 private:
  void worker_loop(int thread);
  void run_tasks(int thread);

  const int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex region_mutex_;  // one parallel region at a time

  // Current region.
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  std::atomic<int> busy_workers_{0};

  // Wake-up: generation counter bumped per region; sleepers wait on cv_.
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::mutex sleep_mutex_;
  std::condition_variable cv_;
};

// Physical cores this process may run on (affinity mask, SMT siblings counted once).
int physical_cores();

// The process-wide pool: created on first call with physical_cores() threads
// (or the count set before), never at import. Callers keep the shared_ptr for
// the duration of their work, so resizing never pulls a pool from under them.
std::shared_ptr<ThreadPool> global_pool();
// Use n threads from now on (n <= 0: physical cores); running work finishes on the old pool.
void set_global_pool_threads(int n);
int global_pool_threads();

// Work handed to the process's background driver thread (created on first use,
// sleeps while there is none): submit returns at once, wait() blocks.
class AsyncJob {
 public:
  bool done() const { return done_.load(std::memory_order_acquire); }
  // Blocks until the job ran; rethrows what it threw.
  void wait();

 private:
  friend std::shared_ptr<AsyncJob> submit_async(std::function<void()> work);
  friend class AsyncDriver;
  std::function<void()> work_;
  std::atomic<bool> done_{false};
  std::exception_ptr error_;
  std::mutex mutex_;
  std::condition_variable cv_;
};

std::shared_ptr<AsyncJob> submit_async(std::function<void()> work);

}  // namespace moebox
