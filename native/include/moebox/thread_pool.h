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
  // A region's parameters; two slots, used by alternate regions (see run_tasks).
  struct Region {
    std::atomic<TaskFn> fn{nullptr};
    std::atomic<void*> ctx{nullptr};
    std::atomic<int64_t> n_tasks{0};
  };

  void worker_loop(int thread);
  // Claims and runs tasks of region `gen` until none is left or a newer region started.
  void run_tasks(uint32_t gen, int thread);

  const int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex region_mutex_;  // one parallel region at a time

  // state_ = generation << 32 | next task index. Tasks are claimed by compare-exchange on
  // it, so a worker that wakes late (the machine is busy, or it was asleep) claims nothing
  // of a region that is over, and the caller never waits for a worker that has not
  // started: it runs the unclaimed tasks itself and waits only for tasks being run.
  std::atomic<uint64_t> state_{0};
  Region regions_[2];
  std::atomic<int64_t> done_tasks_{0};

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
