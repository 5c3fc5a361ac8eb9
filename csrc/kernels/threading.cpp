#include "kernels/threading.h"

#include <cstdlib>

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

}  // namespace

int num_threads() {
  if (g_threads == 0) set_num_threads(initial_threads());
  return g_threads;
}

void set_num_threads(int n) {
  g_threads = n < 1 ? 1 : n;
#ifdef _OPENMP
  omp_set_num_threads(g_threads);
#endif
  // Each BLAS call runs on one thread; parallelism comes from splitting work across our threads.
  blas_set_num_threads(1);
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace fastckpt
