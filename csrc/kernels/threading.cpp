#include "kernels/threading.h"

#include <atomic>
#include <cstdlib>
#include <exception>

#include "kernels/blas.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastckpt {
namespace {

int initial_threads() {
  if (const char* env = std::getenv("FASTCKPT_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int g_threads = 0;
std::atomic<int> g_background{0};

}  // namespace

int configured_num_threads() {
  if (g_threads == 0) set_num_threads(initial_threads());
  return g_threads;
}

int num_threads() {
  const int n = configured_num_threads();
  return n > 1 && g_background.load(std::memory_order_relaxed) > 0 ? n - 1 : n;
}

namespace {
thread_local int t_background = 0;  // background_begin calls of this thread not yet ended

void decrement() {
  int v = g_background.load(std::memory_order_relaxed);
  while (v > 0 && !g_background.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) {
  }
}
}  // namespace

void background_begin() {
  g_background.fetch_add(1, std::memory_order_relaxed);
  ++t_background;
}

void background_end() {
  if (t_background > 0) --t_background;
  decrement();
}

bool background_pause() {
  if (t_background == 0) return false;
  decrement();
  return true;
}

void background_resume(bool paused) {
  if (paused) g_background.fetch_add(1, std::memory_order_relaxed);
}

int background_jobs() { return g_background.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  g_threads = n < 1 ? 1 : n;
#ifdef _OPENMP
  omp_set_num_threads(g_threads);
#endif
  // Each BLAS call runs on one thread; parallelism comes from splitting work across our threads.
  blas_set_num_threads(1);
}

void parallel_tasks(size_t n, const std::function<void(size_t)>& fn) {
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads()) if (n > 1)
#endif
  for (long long i = 0; i < static_cast<long long>(n); ++i) {
    if (failed.load(std::memory_order_relaxed)) continue;
    try {
      fn(static_cast<size_t>(i));
    } catch (...) {
#ifdef _OPENMP
#pragma omp critical(fastckpt_parallel_tasks)
#endif
      if (!error) error = std::current_exception();
      failed = true;
    }
  }
  if (error) std::rethrow_exception(error);
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace fastckpt
