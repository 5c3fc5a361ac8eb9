// Dense layer math: y = act(x . W + b), with Keras' kernel layout W: (in, out). Row-major float32.
#pragma once

#include <cstdint>

namespace fastckpt {

enum class Activation : int { kLinear = 0, kRelu = 1, kSigmoid = 2, kTanh = 3, kSoftmax = 4 };
// The activations' names, indexed by code: the one table that the plan parser (runtime/plan.cpp) and
// the Python binding (fastckpt.ops, through _core.activations) read.
inline constexpr const char* kActivationNames[] = {"linear", "relu", "sigmoid", "tanh", "softmax"};
inline constexpr int kNumActivations = static_cast<int>(sizeof kActivationNames / sizeof *kActivationNames);

// Rows per inference pass (validation in fit, evaluate, predict, the C++ runtime): whole batches
// of batch_size, at least kInferencePassRows rows, so each weight matrix goes through the GEMM's
// packing once per pass instead of once per batch (1000x784x512 in 32-row products: 9.8 ms; in
// 256-row ones: 5.7 ms). Every inference path uses this one rule: rows do not interact, but BLAS
// may round products of different row counts differently in the last bits.
constexpr int64_t kInferencePassRows = 256;
inline int64_t inference_pass_rows(int64_t batch_size) {
  return batch_size * ((kInferencePassRows + batch_size - 1) / batch_size);
}

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
