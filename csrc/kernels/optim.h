// Optimizer updates, one fused pass over a parameter and its slots, with Keras' semantics.
#pragma once

#include <cstdint>

namespace fastckpt {

struct AdamParams {
  float learning_rate = 0.001f;
  float beta_1 = 0.9f;
  float beta_2 = 0.999f;
  float epsilon = 1e-7f;
  bool amsgrad = false;
};

// Step `t` is 1-based (Keras: iterations + 1). vhat is used only with amsgrad (may be null otherwise).
//   m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); [vhat = max(vhat, v)]
//   var -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v or vhat) + eps)
void adam_update(float* var, const float* grad, float* m, float* v, float* vhat, int64_t n,
                 const AdamParams& p, int64_t t);

// Keras SGD: momentum 0 -> var -= lr g; else m = mu m - lr g and var += m (nesterov:
// var += mu m - lr g). `m` may be null when momentum is 0.
void sgd_update(float* var, const float* grad, float* m, int64_t n, float learning_rate,
                float momentum, bool nesterov);

}  // namespace fastckpt
