#include "kernels/dense.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/blas.h"
#include "kernels/fpmode.h"
#include "kernels/threading.h"

namespace fastckpt {
namespace {

// Row loops are parallel only when there is enough work to pay for the fork.
inline bool worth_parallel(int64_t elems) { return elems >= (1 << 15); }

inline void softmax_row(float* z, int n) {
  float mx = z[0];
  for (int j = 1; j < n; ++j) mx = std::max(mx, z[j]);
  float s = 0.f;
  for (int j = 0; j < n; ++j) {
    z[j] = std::exp(z[j] - mx);
    s += z[j];
  }
  const float inv = 1.f / s;
  for (int j = 0; j < n; ++j) z[j] *= inv;
}

inline void act_row(Activation act, float* z, int n) {
  switch (act) {
    case Activation::kLinear: break;
    case Activation::kRelu:
      for (int j = 0; j < n; ++j) z[j] = z[j] > 0.f ? z[j] : 0.f;
      break;
    case Activation::kSigmoid:
      for (int j = 0; j < n; ++j) z[j] = 1.f / (1.f + std::exp(-z[j]));
      break;
    case Activation::kTanh:
      for (int j = 0; j < n; ++j) z[j] = std::tanh(z[j]);
      break;
    case Activation::kSoftmax: softmax_row(z, n); break;
  }
}

inline void act_grad_row(Activation act, const float* y, const float* dy, float* dz, int n) {
  switch (act) {
    case Activation::kLinear:
      if (dz != dy) std::memcpy(dz, dy, sizeof(float) * n);
      break;
    case Activation::kRelu:
      for (int j = 0; j < n; ++j) dz[j] = y[j] > 0.f ? dy[j] : 0.f;
      break;
    case Activation::kSigmoid:
      for (int j = 0; j < n; ++j) dz[j] = dy[j] * y[j] * (1.f - y[j]);
      break;
    case Activation::kTanh:
      for (int j = 0; j < n; ++j) dz[j] = dy[j] * (1.f - y[j] * y[j]);
      break;
    case Activation::kSoftmax: {
      float dot = 0.f;
      for (int j = 0; j < n; ++j) dot += dy[j] * y[j];
      for (int j = 0; j < n; ++j) dz[j] = y[j] * (dy[j] - dot);
      break;
    }
  }
}

}  // namespace

void activation_forward(Activation act, float* z, int64_t rows, int cols) {
  FlushDenormals fz;
  if (act == Activation::kLinear) return;
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(rows * cols))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; ++i) act_row(act, z + i * cols, cols);
  }
}

void activation_backward(Activation act, const float* y, const float* dy, float* dz, int64_t rows,
                         int cols) {
  FlushDenormals fz;
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(rows * cols))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; ++i) act_grad_row(act, y + i * cols, dy + i * cols, dz + i * cols, cols);
  }
}

void dense_forward(const float* x, const float* W, const float* b, float* y, int M, int K, int N,
                   Activation act) {
  FlushDenormals fz;
  if (b) {
    // Seed C with the bias so the GEMM adds into it (beta = 1): the bias costs no extra pass.
    for (int i = 0; i < M; ++i) std::memcpy(y + static_cast<int64_t>(i) * N, b, sizeof(float) * N);
  }
  gemm(false, false, M, N, K, 1.f, x, K, W, N, b ? 1.f : 0.f, y, N);
  activation_forward(act, y, M, N);
}

void dense_backward(const float* x, const float* W, const float* y, const float* dy, float* dz,
                    float* dW, float* db, float* dx, int M, int K, int N, Activation act,
                    bool accumulate) {
  FlushDenormals fz;
  const float* g = dy;
  if (act != Activation::kLinear) {
    activation_backward(act, y, dy, dz, M, N);
    g = dz;
  }
  // dW (K x N) = x^T (K x M) . g (M x N)
  gemm(true, false, K, N, M, 1.f, x, K, g, N, accumulate ? 1.f : 0.f, dW, N);
  if (db) {
    // Column sums in row order: a fixed summation order, so results never depend on threads.
    if (!accumulate) std::memset(db, 0, sizeof(float) * N);
    for (int i = 0; i < M; ++i) {
      const float* gi = g + static_cast<int64_t>(i) * N;
      for (int j = 0; j < N; ++j) db[j] += gi[j];
    }
  }
  // dx (M x K) = g (M x N) . W^T (N x K)
  if (dx) gemm(false, true, M, K, N, 1.f, g, N, W, N, 0.f, dx, K);
}

}  // namespace fastckpt
