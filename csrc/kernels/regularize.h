// Weight penalties (keras.regularizers L1 / L2 / L1L2): the penalty and its gradient, one pass each.
#pragma once

#include <cstdint>

namespace fastckpt {

// l1 * sum(|x|) + l2 * sum(x^2): float32 partial sums over fixed runs of 1024 elements, added in
// double and in order, so the result does not depend on the thread count or the CPU.
double l1l2_penalty(const float* x, int64_t n, double l1, double l2);

// grad += l1 * sign(x) + 2 * l2 * x (sign(0) = 0, as TensorFlow's gradient of |x|), in float32.
void l1l2_add_gradient(const float* x, float* grad, int64_t n, float l1, float l2);

}  // namespace fastckpt
