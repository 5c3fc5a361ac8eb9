// Dense layer math: y = act(x . W + b), with Keras' kernel layout W: (in, out). Row-major float32.
#pragma once

#include <cstdint>

namespace fastckpt {

// Codes are stable (saved nowhere, but the C API and plans name them through the table below): new
// activations go at the end.
enum class Activation : int {
  kLinear = 0, kRelu = 1, kSigmoid = 2, kTanh = 3, kSoftmax = 4, kRelu6 = 5, kLeakyRelu = 6,
  kElu = 7, kSelu = 8, kGelu = 9, kGeluApproximate = 10, kSilu = 11, kSwish = 12,
  kHardSigmoid = 13, kSoftplus = 14, kSoftsign = 15, kLogSoftmax = 16, kExponential = 17,
  kMish = 18, kHardSilu = 19, kHardSwish = 20, kLogSigmoid = 21
};
// The activations' names, indexed by code: the one table that the plan parser (runtime/plan.cpp) and
// the Python binding (fastckpt.ops, through _core.activations) read. As in tf.keras: "gelu" is the
// exact (erf) form, "leaky_relu" has slope 0.2, "hard_sigmoid" is clip(0.2 x + 0.5, 0, 1);
// "gelu_approximate" is the tanh form (gelu(x, approximate=True)); "silu" and "swish" are one function.
// Keras 3 additions: "hard_silu" = "hard_swish" = x * relu6(x + 3) / 6, "log_sigmoid" = -softplus(-x).
inline constexpr const char* kActivationNames[] = {
    "linear", "relu", "sigmoid", "tanh", "softmax", "relu6", "leaky_relu", "elu", "selu", "gelu",
    "gelu_approximate", "silu", "swish", "hard_sigmoid", "softplus", "softsign", "log_softmax",
    "exponential", "mish", "hard_silu", "hard_swish", "log_sigmoid"};
inline constexpr int kNumActivations = static_cast<int>(sizeof kActivationNames / sizeof *kActivationNames);
static_assert(kNumActivations == static_cast<int>(Activation::kLogSigmoid) + 1, "names match codes");

// Whether the activation's derivative needs the pre-activation z (not only the output y): then
// training keeps z beside y (Dense forward with a z buffer, the fused trainer's per-layer z).
inline bool activation_needs_z(Activation a) {
  switch (a) {
    case Activation::kGelu: case Activation::kGeluApproximate: case Activation::kSilu:
    case Activation::kSwish: case Activation::kSoftplus: case Activation::kSoftsign:
    case Activation::kMish: case Activation::kHardSilu: case Activation::kHardSwish:
      return true;
    default:
      return false;
  }
}
// Softmax and log_softmax work on whole rows; every other activation is elementwise.
inline bool activation_is_rowwise(Activation a) {
  return a == Activation::kSoftmax || a == Activation::kLogSoftmax;
}

// Rows per inference pass (validation in fit, evaluate, predict, the C++ runtime): whole batches
// of batch_size, at least kInferencePassRows rows, so each weight matrix goes through the GEMM's
// packing once per pass instead of once per batch (1000x784x512 in 32-row products: 9.8 ms; in
// 256-row ones: 5.7 ms). Every inference path uses this one rule: rows do not interact, but BLAS
// may round products of different row counts differently in the last bits.
constexpr int64_t kInferencePassRows = 256;
inline int64_t inference_pass_rows(int64_t batch_size) {
  return batch_size * ((kInferencePassRows + batch_size - 1) / batch_size);
}

// Rows per pass of predict (Python's model.predict without per-batch hooks, and the C++ runtime,
// which must agree bit for bit): whole batches, at least kPredictPassRows rows. Larger than the
// evaluate passes: predict keeps no per-batch state, and 1000 rows in one pass let the Dense
// chain below run as one parallel region (tutorial predict, 2 threads: see bench/README.md).
constexpr int64_t kPredictPassRows = 1024;
inline int64_t predict_pass_rows(int64_t batch_size) {
  return batch_size * ((kPredictPassRows + batch_size - 1) / batch_size);
}

// In place on a (rows x cols) row-major block; softmax is per row.
void activation_forward(Activation act, float* z, int64_t rows, int cols);
// y = act(z), z kept. Same values as the in-place form, bit for bit.
void activation_forward(Activation act, const float* z, float* y, int64_t rows, int cols);

// dz = dy * act'(.), through the output y and, where activation_needs_z, the pre-activation z
// (may be null otherwise; null when needed throws std::invalid_argument). dz may alias dy.
void activation_backward(Activation act, const float* z, const float* y, const float* dy, float* dz,
                         int64_t rows, int cols);
// The form without z, for the activations that do not need it.
void activation_backward(Activation act, const float* y, const float* dy, float* dz, int64_t rows,
                         int cols);

// y (M x N) = act(x (M x K) . W (K x N) + b (N)); b may be null.
void dense_forward(const float* x, const float* W, const float* b, float* y, int M, int K, int N,
                   Activation act);
// The same, keeping the pre-activation x . W + b in z (M x N) when z is not null.
void dense_forward(const float* x, const float* W, const float* b, float* z, float* y, int M, int K,
                   int N, Activation act);

// One layer of an inference chain: y (M x N) = act(input (M x K) . W (K x N) + b); b may be null.
// The input is the chain's x for the first layer and the previous layer's y after that.
struct DenseChainLayer {
  const float* W;
  const float* b;
  float* y;
  int K;
  int N;
  Activation act;
};
// Inference through consecutive Dense layers on M rows, each output written to its layer's y
// (layers[i].K == layers[i - 1].N; the caller checks). The same bits as dense_forward called layer
// by layer: where gemm would split every product by rows the same way (gemm_row_block, blas.h),
// each thread takes its row block through all the layers in one parallel region (bias, GEMM and
// activation on rows still in its cache, no barrier between layers); otherwise layer by layer.
void dense_chain_forward(const float* x, int M, const DenseChainLayer* layers, int n_layers);

// Given x, W, the forward output y and dy = dL/dy:
//   dz = dy * act'  (written to dz, which may alias dy; for linear it is dy itself)
//   dW = x^T dz, db = sum_rows(dz), dx = dz W^T.
// db and dx may be null (no bias / first layer). With accumulate, dW and db are added to.
void dense_backward(const float* x, const float* W, const float* y, const float* dy, float* dz,
                    float* dW, float* db, float* dx, int M, int K, int N, Activation act,
                    bool accumulate);
// The same with the pre-activation z kept by the forward (needed where activation_needs_z).
void dense_backward(const float* x, const float* W, const float* z, const float* y, const float* dy,
                    float* dz, float* dW, float* db, float* dx, int M, int K, int N, Activation act,
                    bool accumulate);

}  // namespace fastckpt
