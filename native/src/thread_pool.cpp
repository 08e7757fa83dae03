#include "moebox/thread_pool.h"

#include <immintrin.h>
#include <sched.h>

#include <chrono>
#include <deque>
#include <fstream>
#include <memory>
#include <set>
#include <string>

namespace moebox {
namespace {

// Polling time before a worker (or a waiter) goes to sleep.
constexpr auto kSpinTime = std::chrono::microseconds(100);

// Spin until pred() or kSpinTime passed; true if pred() held.
template <typename Pred>
bool spin_until(Pred pred) {
  const auto end = std::chrono::steady_clock::now() + kSpinTime;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      _mm_pause();
    }
    if (std::chrono::steady_clock::now() > end) return pred();
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
  for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::run_tasks(int thread) {
  for (;;) {
    const int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= n_tasks_) break;
    fn_(ctx_, task, thread);
  }
}

void ThreadPool::worker_loop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
    uint64_t gen = generation_.load(std::memory_order_acquire);
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(sleep_mutex_);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load()) return;
    run_tasks(thread);
    busy_workers_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(int64_t n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks <= 0) return;
  std::lock_guard<std::mutex> region(region_mutex_);
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(ctx, t, 0);
    return;
  }
  fn_ = fn;
  ctx_ = ctx;
  n_tasks_ = n_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  busy_workers_.store(n_threads_ - 1, std::memory_order_relaxed);
  {
    // Under the mutex so a worker between its predicate check and its wait cannot miss the bump.
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  run_tasks(0);
  // The other workers finish their last task; they never sleep mid-region.
  while (busy_workers_.load(std::memory_order_acquire) != 0) _mm_pause();
}

int physical_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) {
    const unsigned n = std::thread::hardware_concurrency();
    return n ? static_cast<int>(n) : 1;
  }
  std::set<std::string> cores;
  int logical = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    ++logical;
    std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
    std::string siblings;
    if (f && std::getline(f, siblings))
      cores.insert(siblings);
    else
      cores.insert("cpu" + std::to_string(cpu));
  }
  const int n = static_cast<int>(cores.size());
  return n > 0 ? n : (logical > 0 ? logical : 1);
}

namespace {
std::mutex g_pool_mutex;
std::shared_ptr<ThreadPool> g_pool;
int g_requested_threads = 0;
}  // namespace

std::shared_ptr<ThreadPool> global_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool) g_pool = std::make_shared<ThreadPool>(g_requested_threads > 0 ? g_requested_threads : physical_cores());
  return g_pool;
}

void set_global_pool_threads(int n) {
  std::shared_ptr<ThreadPool> old;
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    g_requested_threads = n;
    old.swap(g_pool);  // created again on next use
  }
  // old's workers are joined here (or by the last user still holding it).
}

int global_pool_threads() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool) return g_pool->size();
  return g_requested_threads > 0 ? g_requested_threads : physical_cores();
}

void AsyncJob::wait() {
  if (!spin_until([&] { return done(); })) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return done(); });
  }
  if (error_) std::rethrow_exception(error_);
}

// One background thread runs submitted jobs in order; it sleeps when the queue is empty.
class AsyncDriver {
 public:
  AsyncDriver() : thread_([this] { loop(); }) {}
  ~AsyncDriver() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  void push(std::shared_ptr<AsyncJob> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    for (;;) {
      std::shared_ptr<AsyncJob> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        job->work_();
      } catch (...) {
        job->error_ = std::current_exception();
      }
      job->work_ = nullptr;
      {
        std::lock_guard<std::mutex> lock(job->mutex_);
        job->done_.store(true, std::memory_order_release);
      }
      job->cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<AsyncJob>> queue_;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the members above exist
};

std::shared_ptr<AsyncJob> submit_async(std::function<void()> work) {
  static AsyncDriver* driver = new AsyncDriver();  // lives until exit; never joined at teardown
  auto job = std::make_shared<AsyncJob>();
  job->work_ = std::move(work);
  driver->push(job);
  return job;
}

}  // namespace moebox
