#include "kernels/optim.h"

#include <algorithm>
#include <cmath>

#include "kernels/fpmode.h"
#include "kernels/simd.h"
#include "kernels/threading.h"

namespace fastckpt {
namespace {

// One contiguous range of the update; separate loops for amsgrad so the common one vectorizes.
FASTCKPT_CLONES
void adam_range(float* __restrict var, const float* __restrict grad, float* __restrict m,
                float* __restrict v, float* __restrict vhat, int64_t begin, int64_t end,
                float alpha, float one_b1, float one_b2, float eps) {
  if (!vhat) {
    for (int64_t i = begin; i < end; ++i) {
      const float g = grad[i];
      const float mi = m[i] + (g - m[i]) * one_b1;
      const float vi = v[i] + (g * g - v[i]) * one_b2;
      m[i] = mi;
      v[i] = vi;
      var[i] -= alpha * mi / (std::sqrt(vi) + eps);
    }
    return;
  }
  for (int64_t i = begin; i < end; ++i) {
    const float g = grad[i];
    const float mi = m[i] + (g - m[i]) * one_b1;
    const float vi = v[i] + (g * g - v[i]) * one_b2;
    m[i] = mi;
    v[i] = vi;
    const float vh = std::max(vhat[i], vi);
    vhat[i] = vh;
    var[i] -= alpha * mi / (std::sqrt(vh) + eps);
  }
}

FASTCKPT_CLONES
void sgd_range(float* __restrict var, const float* __restrict grad, float* __restrict m,
               int64_t begin, int64_t end, float lr, float mu, bool nesterov) {
  if (!m) {
    for (int64_t i = begin; i < end; ++i) var[i] -= lr * grad[i];
  } else if (nesterov) {
    for (int64_t i = begin; i < end; ++i) {
      const float mi = mu * m[i] - lr * grad[i];
      m[i] = mi;
      var[i] += mu * mi - lr * grad[i];
    }
  } else {
    for (int64_t i = begin; i < end; ++i) {
      const float mi = mu * m[i] - lr * grad[i];
      m[i] = mi;
      var[i] += mi;
    }
  }
}

// Splits [0, n) into one contiguous range per thread (never more than n / 2^15 ranges: a
// fork costs more than updating a few thousand floats).
template <typename F>
void for_ranges(int64_t n, F&& body) {
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), n >> 15)));
  if (nt <= 1) {
    body(0, n);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int t = 0; t < nt; ++t) body(n * t / nt, n * (t + 1) / nt);
  }
}

}  // namespace

void adam_update(float* var, const float* grad, float* m, float* v, float* vhat, int64_t n,
                 const AdamParams& p, int64_t t) {
  FlushDenormals fz;
  // The step size is computed in float32 as Keras does.
  const float tf = static_cast<float>(t);
  const float b1p = std::pow(p.beta_1, tf), b2p = std::pow(p.beta_2, tf);
  const float alpha = p.learning_rate * std::sqrt(1.f - b2p) / (1.f - b1p);
  const float one_b1 = 1.f - p.beta_1, one_b2 = 1.f - p.beta_2, eps = p.epsilon;
  float* vh = p.amsgrad ? vhat : nullptr;
  for_ranges(n, [&](int64_t b, int64_t e) { adam_range(var, grad, m, v, vh, b, e, alpha, one_b1, one_b2, eps); });
}

void sgd_update(float* var, const float* grad, float* m, int64_t n, float learning_rate,
                float momentum, bool nesterov) {
  FlushDenormals fz;
  float* mm = momentum == 0.f ? nullptr : m;
  for_ranges(n, [&](int64_t b, int64_t e) { sgd_range(var, grad, mm, b, e, learning_rate, momentum, nesterov); });
}

}  // namespace fastckpt
