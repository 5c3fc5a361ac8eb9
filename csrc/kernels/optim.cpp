#include "kernels/optim.h"

#include <algorithm>
#include <cmath>

#include "kernels/fpmode.h"
#include "kernels/threading.h"

namespace fastckpt {

void adam_update(float* var, const float* grad, float* m, float* v, float* vhat, int64_t n,
                 const AdamParams& p, int64_t t) {
  FlushDenormals fz;
  // The step size is computed in float32 as Keras does, so trajectories match it bit for bit
  // as far as the element-wise math allows.
  const float tf = static_cast<float>(t);
  const float b1p = std::pow(p.beta_1, tf), b2p = std::pow(p.beta_2, tf);
  const float alpha = p.learning_rate * std::sqrt(1.f - b2p) / (1.f - b1p);
  const float one_b1 = 1.f - p.beta_1, one_b2 = 1.f - p.beta_2, eps = p.epsilon;
  const bool ams = p.amsgrad && vhat;
#pragma omp parallel num_threads(num_threads()) if (n >= (1 << 16))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float g = grad[i];
      const float mi = m[i] + (g - m[i]) * one_b1;
      const float vi = v[i] + (g * g - v[i]) * one_b2;
      m[i] = mi;
      v[i] = vi;
      float denom_v = vi;
      if (ams) {
        denom_v = std::max(vhat[i], vi);
        vhat[i] = denom_v;
      }
      var[i] -= alpha * mi / (std::sqrt(denom_v) + eps);
    }
  }
}

void sgd_update(float* var, const float* grad, float* m, int64_t n, float learning_rate,
                float momentum, bool nesterov) {
  FlushDenormals fz;
  if (momentum == 0.f || !m) {
#pragma omp parallel num_threads(num_threads()) if (n >= (1 << 16))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) var[i] -= learning_rate * grad[i];
  }
    return;
  }
#pragma omp parallel num_threads(num_threads()) if (n >= (1 << 16))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float mi = momentum * m[i] - learning_rate * grad[i];
      m[i] = mi;
      var[i] += nesterov ? momentum * mi - learning_rate * grad[i] : mi;
    }
  }
}

}  // namespace fastckpt
