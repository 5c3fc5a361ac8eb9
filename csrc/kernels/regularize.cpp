#include "kernels/regularize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/fpmode.h"
#include "kernels/simd.h"
#include "kernels/threading.h"

namespace fastckpt {
namespace {

constexpr int64_t kBlock = int64_t(1) << 15;  // elements per partial sum (one task)
constexpr int64_t kSub = 1024;                // elements per float32 partial, added in double
constexpr int kLanes = 16;                    // independent accumulators: vectorizes, fixed order

struct Sums {
  double abs = 0.0, sq = 0.0;
};

// float32 lanes over short runs (so they vectorize), double across runs: every sum is taken in
// the same order on every CPU and thread count.
FASTCKPT_CLONES
Sums block_sums(const float* __restrict x, int64_t begin, int64_t end) {
  Sums out;
  for (int64_t s = begin; s < end; s += kSub) {
    const int64_t e = std::min(end, s + kSub);
    float a[kLanes] = {}, q[kLanes] = {};
    int64_t i = s;
    for (; i + kLanes <= e; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const float v = x[i + j];
        a[j] += std::fabs(v);
        q[j] += v * v;
      }
    }
    for (int j = 0; i < e; ++i, ++j) {
      const float v = x[i];
      a[j] += std::fabs(v);
      q[j] += v * v;
    }
    for (int j = 0; j < kLanes; ++j) {
      out.abs += a[j];
      out.sq += q[j];
    }
  }
  return out;
}

FASTCKPT_CLONES
void grad_range(const float* __restrict x, float* __restrict g, int64_t begin, int64_t end, float l1,
                float two_l2) {
  for (int64_t i = begin; i < end; ++i) {
    const float v = x[i];
    const float sign = static_cast<float>((v > 0.f) - (v < 0.f));
    g[i] += l1 * sign + two_l2 * v;
  }
}

}  // namespace

double l1l2_penalty(const float* x, int64_t n, double l1, double l2) {
  if (n <= 0) return 0.0;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<Sums> partial(static_cast<size_t>(blocks));
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), blocks)));
  if (nt <= 1) {
    for (int64_t b = 0; b < blocks; ++b)
      partial[static_cast<size_t>(b)] = block_sums(x, b * kBlock, std::min(n, (b + 1) * kBlock));
  } else {
#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(static)
      for (int64_t b = 0; b < blocks; ++b)
        partial[static_cast<size_t>(b)] = block_sums(x, b * kBlock, std::min(n, (b + 1) * kBlock));
    }
  }
  double abs_sum = 0.0, sq_sum = 0.0;
  for (const Sums& p : partial) {
    abs_sum += p.abs;
    sq_sum += p.sq;
  }
  return l1 * abs_sum + l2 * sq_sum;
}

void l1l2_add_gradient(const float* x, float* grad, int64_t n, float l1, float l2) {
  if (n <= 0) return;
  const float two_l2 = 2.f * l2;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), blocks)));
  if (nt <= 1) {
    FlushDenormals fz;
    grad_range(x, grad, 0, n, l1, two_l2);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int t = 0; t < nt; ++t) grad_range(x, grad, n * t / nt, n * (t + 1) / nt, l1, two_l2);
  }
}

}  // namespace fastckpt
