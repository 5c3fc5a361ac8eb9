// Dense layer math: y = act(x . W + b), with Keras' kernel layout W: (in, out). Row-major float32.
#pragma once

#include <cstdint>

namespace fastckpt {

enum class Activation : int { kLinear = 0, kRelu = 1, kSigmoid = 2, kTanh = 3, kSoftmax = 4 };

// In place on a (rows x cols) row-major block; softmax is per row.
void activation_forward(Activation act, float* z, int64_t rows, int cols);

// dz = dy * act'(.), expressed through the activation's output y (all of ours allow it).
// dz may alias dy.
void activation_backward(Activation act, const float* y, const float* dy, float* dz, int64_t rows,
                         int cols);

// y (M x N) = act(x (M x K) . W (K x N) + b (N)); b may be null.
void dense_forward(const float* x, const float* W, const float* b, float* y, int M, int K, int N,
                   Activation act);

// Given x, W, the forward output y and dy = dL/dy:
//   dz = dy * act'  (written to dz, which may alias dy; for linear it is dy itself)
//   dW = x^T dz, db = sum_rows(dz), dx = dz W^T.
// db and dx may be null (no bias / first layer). With accumulate, dW and db are added to.
void dense_backward(const float* x, const float* W, const float* y, const float* dy, float* dz,
                    float* dW, float* db, float* dx, int M, int K, int N, Activation act,
                    bool accumulate);

}  // namespace fastckpt
