// A minimal parallel-for over std::thread for the io layer (which must not depend on the kernels'
// OpenMP pool: the C++ embedding API links io alone). Exceptions from any task are rethrown.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace fastckpt::io {

// Calls fn(i) for i in [0, n) on up to `threads` threads (the caller's thread included). After the
// first exception no new task starts; the first exception is rethrown once all threads stopped.
template <typename F>
void parallel_for(size_t n, int threads, F&& fn) {
  const size_t workers = std::max<size_t>(1, std::min<size_t>(n, threads < 1 ? 1 : size_t(threads)));
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex mu;
  auto body = [&] {
    for (;;) {
      const size_t i = next.fetch_add(1);
      if (i >= n || failed.load()) return;
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (size_t t = 1; t < workers; ++t) pool.emplace_back(body);
  body();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace fastckpt::io
