#include "kernels/dense.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/blas.h"
#include "kernels/fpmode.h"
#include "kernels/simd.h"
#include "kernels/threading.h"

namespace fastckpt {
namespace {

// Row loops are parallel only when there is enough work to pay for the fork.
inline bool worth_parallel(int64_t elems) { return elems >= (1 << 15); }

// Constants as tf.keras / TensorFlow use them.
constexpr float kSeluAlpha = 1.6732632423543772848170429916717f;
constexpr float kSeluScale = 1.0507009873554804934193349852946f;
constexpr float kLeakySlope = 0.2f;
constexpr float kSqrt2OverPi = 0.7978845608028654f;    // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

inline float sigmoidf(float v) { return 1.f / (1.f + std::exp(-v)); }

// exp without a library call or branch, so loops over it vectorize: reduction by ln 2 and Cephes'
// expf polynomial (within 2 ulp of std::exp); inputs clamped to [-87, 88], where 2^n stays a normal
// float (below, the true value is subnormal, flushed to zero by the kernels anyway).
inline float exp_poly(float x) {
  x = x < -87.f ? -87.f : x;
  x = x > 88.f ? 88.f : x;
  const float fn = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round(x / ln 2)
  float r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}

// The Gaussian tail q(a) = P(N(0,1) < -a) = erfc(a / sqrt 2) / 2 for a = |x|, and the density
// factor e = exp(-x^2 / 2), with explicit FMAs (the same bits in every clone, FASTCKPT_CLONES_FMA):
//   q = t * r(t) * e,  t = 1 / (1 + 0.3 a),
// r a degree-9 polynomial fitted (weighted least squares towards minimax, our own fit) to
// q(a) exp(a^2 / 2) / t over a in [0, 13.5]: relative error 1.1e-8 with these float
// coefficients. e takes x^2 as the exact sum hi + lo (FMA), so its argument carries no rounding,
// then exp as exp_poly (Cephes' polynomial, Horner in FMAs). Beyond a = 13.2 the exponent is
// clamped at -87 and q, below float's normal range, is flushed to zero by the kernels' FTZ mode.
// The result gives the CDF with relative accuracy on both sides (no 1 + erf cancellation).
struct GaussTail {
  float q;  // P(N < -|x|)
  float e;  // exp(-x^2 / 2)
};
inline GaussTail gauss_tail(float x) {
  const float a = std::min(std::fabs(x), 14.f);  // beyond 14: q = 0, e = 0 (NaN stays NaN)
  const float h = a * a;
  const float l = std::fma(a, a, -h);                       // a^2 = h + l exactly
  const float w = std::max(-0.5f * h, -87.f);
  const float fn = std::fma(w, 1.44269504088896341f, 12582912.f) - 12582912.f;  // round(w / ln 2)
  float r = std::fma(fn, -0.693359375f, w);
  r = std::fma(fn, 2.12194440e-4f, r);
  r = std::fma(-0.5f, l, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r, 1.f);
  p = std::fma(p, r, 1.f);
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float e = p * scale;
  const float t = 1.f / std::fma(0.3f, a, 1.f);
  float c = -0.02059468999505043f;
  c = std::fma(c, t, 0.11227364838123322f);
  c = std::fma(c, t, -0.2278178334236145f);
  c = std::fma(c, t, 0.1912344992160797f);
  c = std::fma(c, t, -0.07894530147314072f);
  c = std::fma(c, t, 0.09588772803544998f);
  c = std::fma(c, t, 0.07848745584487915f);
  c = std::fma(c, t, 0.11021333187818527f);
  c = std::fma(c, t, 0.11957462131977081f);
  c = std::fma(c, t, 0.1196865364909172f);
  return {(t * c) * e, e};
}

// Phi(x) = P(N(0,1) < x) from the tail: q for x < 0, 1 - q otherwise (both arms computed, so
// the select vectorizes).
inline float gauss_cdf(float x, float q) {
  const float upper = 1.f - q;
  return x < 0.f ? q : upper;
}

// The costly elementwise rows, compiled per instruction set (FASTCKPT_CLONES) so they run as
// SIMD loops. y may alias z (then the compiler's overlap check picks the scalar loop, with the
// same arithmetic).
// gelu(x) = x * Phi(x).
FASTCKPT_CLONES_FMA
void gelu_row(const float* z, float* y, int n) {
  for (int j = 0; j < n; ++j) {
    const float v = z[j];
    y[j] = v * gauss_cdf(v, gauss_tail(v).q);
  }
}

// gelu'(x) = Phi(x) + x * phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi): one exp for both.
FASTCKPT_CLONES_FMA
void gelu_grad_row(const float* z, const float* dy, float* dz, int n) {
  for (int j = 0; j < n; ++j) {
    const float v = z[j];
    const GaussTail g = gauss_tail(v);
    const float pdf = 0.39894228040143267794f * g.e;
    dz[j] = dy[j] * std::fma(v, pdf, gauss_cdf(v, g.q));
  }
}

FASTCKPT_CLONES
void silu_row(const float* z, float* y, int n) {
  for (int j = 0; j < n; ++j) y[j] = z[j] / (1.f + exp_poly(-z[j]));
}

FASTCKPT_CLONES
void silu_grad_row(const float* z, const float* dy, float* dz, int n) {
  for (int j = 0; j < n; ++j) {
    const float s = 1.f / (1.f + exp_poly(-z[j]));
    dz[j] = dy[j] * (s * (1.f + z[j] * (1.f - s)));
  }
}
inline float softplusf(float v) { return std::max(v, 0.f) + std::log1p(std::exp(-std::fabs(v))); }

// y may alias z (the in-place form).
inline void softmax_row(const float* z, float* y, int n) {
  float mx = z[0];
  for (int j = 1; j < n; ++j) mx = std::max(mx, z[j]);
  float s = 0.f;
  for (int j = 0; j < n; ++j) {
    y[j] = std::exp(z[j] - mx);
    s += y[j];
  }
  const float inv = 1.f / s;
  for (int j = 0; j < n; ++j) y[j] *= inv;
}

inline void log_softmax_row(const float* z, float* y, int n) {
  float mx = z[0];
  for (int j = 1; j < n; ++j) mx = std::max(mx, z[j]);
  float s = 0.f;
  for (int j = 0; j < n; ++j) s += std::exp(z[j] - mx);
  const float lse = std::log(s);
  for (int j = 0; j < n; ++j) y[j] = (z[j] - mx) - lse;
}

// y = act(z) on one row; y may alias z.
inline void act_row(Activation act, const float* z, float* y, int n) {
  switch (act) {
    case Activation::kLinear:
      if (y != z) std::memcpy(y, z, sizeof(float) * n);
      break;
    case Activation::kRelu:
      for (int j = 0; j < n; ++j) y[j] = z[j] > 0.f ? z[j] : 0.f;
      break;
    case Activation::kSigmoid:
      for (int j = 0; j < n; ++j) y[j] = 1.f / (1.f + std::exp(-z[j]));
      break;
    case Activation::kTanh:
      for (int j = 0; j < n; ++j) y[j] = std::tanh(z[j]);
      break;
    case Activation::kSoftmax: softmax_row(z, y, n); break;
    case Activation::kRelu6:
      for (int j = 0; j < n; ++j) y[j] = std::min(std::max(z[j], 0.f), 6.f);
      break;
    case Activation::kLeakyRelu:
      for (int j = 0; j < n; ++j) {
        const float v = z[j], s = kLeakySlope * v;
        y[j] = v > 0.f ? v : s;
      }
      break;
    case Activation::kElu:
      for (int j = 0; j < n; ++j) y[j] = z[j] > 0.f ? z[j] : std::expm1(z[j]);
      break;
    case Activation::kSelu:
      for (int j = 0; j < n; ++j)
        y[j] = z[j] > 0.f ? kSeluScale * z[j] : (kSeluScale * kSeluAlpha) * std::expm1(z[j]);
      break;
    case Activation::kGelu: gelu_row(z, y, n); break;
    case Activation::kGeluApproximate:
      for (int j = 0; j < n; ++j) {
        const float v = z[j];
        y[j] = 0.5f * v * (1.f + std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v)));
      }
      break;
    case Activation::kSilu:
    case Activation::kSwish: silu_row(z, y, n); break;
    case Activation::kHardSigmoid:
      for (int j = 0; j < n; ++j) y[j] = std::min(std::max(0.2f * z[j] + 0.5f, 0.f), 1.f);
      break;
    case Activation::kSoftplus:
      for (int j = 0; j < n; ++j) y[j] = softplusf(z[j]);
      break;
    case Activation::kSoftsign:
      for (int j = 0; j < n; ++j) y[j] = z[j] / (1.f + std::fabs(z[j]));
      break;
    case Activation::kLogSoftmax: log_softmax_row(z, y, n); break;
    case Activation::kExponential:
      for (int j = 0; j < n; ++j) y[j] = std::exp(z[j]);
      break;
    case Activation::kMish:
      for (int j = 0; j < n; ++j) y[j] = z[j] * std::tanh(softplusf(z[j]));
      break;
    case Activation::kHardSilu:
    case Activation::kHardSwish:
      for (int j = 0; j < n; ++j) y[j] = z[j] * (std::min(std::max(z[j] + 3.f, 0.f), 6.f) / 6.f);
      break;
    case Activation::kLogSigmoid:
      for (int j = 0; j < n; ++j) y[j] = -softplusf(-z[j]);
      break;
  }
}

// dz = dy * act'; z is null unless activation_needs_z(act). dz may alias dy.
inline void act_grad_row(Activation act, const float* z, const float* y, const float* dy, float* dz,
                         int n) {
  switch (act) {
    case Activation::kLinear:
      if (dz != dy) std::memcpy(dz, dy, sizeof(float) * n);
      break;
    case Activation::kRelu:
      for (int j = 0; j < n; ++j) {
        const float g = dy[j];  // loaded unconditionally: a select, so the loop vectorizes
        dz[j] = y[j] > 0.f ? g : 0.f;
      }
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
    case Activation::kRelu6:
      for (int j = 0; j < n; ++j) {
        const float v = y[j], g = dy[j];
        dz[j] = (v > 0.f) & (v < 6.f) ? g : 0.f;
      }
      break;
    case Activation::kLeakyRelu:
      for (int j = 0; j < n; ++j) {
        const float g = dy[j], s = kLeakySlope * g;
        dz[j] = y[j] > 0.f ? g : s;
      }
      break;
    case Activation::kElu:
      for (int j = 0; j < n; ++j) {
        const float v = y[j], g = dy[j], s = g * (v + 1.f);
        dz[j] = v > 0.f ? g : s;
      }
      break;
    case Activation::kSelu:
      for (int j = 0; j < n; ++j)
        dz[j] = y[j] > 0.f ? dy[j] * kSeluScale : dy[j] * (y[j] + kSeluScale * kSeluAlpha);
      break;
    case Activation::kGelu: gelu_grad_row(z, dy, dz, n); break;
    case Activation::kGeluApproximate:
      for (int j = 0; j < n; ++j) {
        const float v = z[j];
        const float t = std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v));
        const float dinner = kSqrt2OverPi * (1.f + 3.f * kGeluCubic * v * v);
        dz[j] = dy[j] * (0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * dinner);
      }
      break;
    case Activation::kSilu:
    case Activation::kSwish: silu_grad_row(z, dy, dz, n); break;
    case Activation::kHardSigmoid:
      for (int j = 0; j < n; ++j) {
        const float v = y[j], s = 0.2f * dy[j];
        dz[j] = (v > 0.f) & (v < 1.f) ? s : 0.f;
      }
      break;
    case Activation::kSoftplus:
      for (int j = 0; j < n; ++j) dz[j] = dy[j] * sigmoidf(z[j]);
      break;
    case Activation::kSoftsign:
      for (int j = 0; j < n; ++j) {
        const float d = 1.f + std::fabs(z[j]);
        dz[j] = dy[j] / (d * d);
      }
      break;
    case Activation::kLogSoftmax: {
      float s = 0.f;
      for (int j = 0; j < n; ++j) s += dy[j];
      for (int j = 0; j < n; ++j) dz[j] = dy[j] - std::exp(y[j]) * s;
      break;
    }
    case Activation::kExponential:
      for (int j = 0; j < n; ++j) dz[j] = dy[j] * y[j];
      break;
    case Activation::kMish:
      for (int j = 0; j < n; ++j) {
        const float v = z[j];
        const float t = std::tanh(softplusf(v));
        dz[j] = dy[j] * (t + v * (1.f - t * t) * sigmoidf(v));
      }
      break;
    case Activation::kHardSilu:
    case Activation::kHardSwish:
      for (int j = 0; j < n; ++j) {
        const float v = z[j];
        dz[j] = v <= -3.f ? 0.f : v >= 3.f ? dy[j] : dy[j] * ((2.f * v + 3.f) / 6.f);
      }
      break;
    case Activation::kLogSigmoid:  // d/dz log(sigmoid(z)) = 1 - sigmoid(z) = 1 - exp(y)
      for (int j = 0; j < n; ++j) dz[j] = dy[j] * -std::expm1(y[j]);
      break;
  }
}

}  // namespace

void activation_forward(Activation act, const float* z, float* y, int64_t rows, int cols) {
  FlushDenormals fz;
  if (act == Activation::kLinear && y == z) return;
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(rows * cols))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; ++i) act_row(act, z + i * cols, y + i * cols, cols);
  }
}

void activation_forward(Activation act, float* z, int64_t rows, int cols) {
  activation_forward(act, z, z, rows, cols);
}

void activation_backward(Activation act, const float* z, const float* y, const float* dy, float* dz,
                         int64_t rows, int cols) {
  if (activation_needs_z(act) && z == nullptr && rows > 0 && cols > 0)
    throw std::invalid_argument(std::string("activation_backward: '") +
                                kActivationNames[static_cast<int>(act)] +
                                "' needs the pre-activation values");
  FlushDenormals fz;
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(rows * cols))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; ++i)
      act_grad_row(act, z ? z + i * cols : nullptr, y + i * cols, dy + i * cols, dz + i * cols, cols);
  }
}

void activation_backward(Activation act, const float* y, const float* dy, float* dz, int64_t rows,
                         int cols) {
  activation_backward(act, nullptr, y, dy, dz, rows, cols);
}

namespace {

// One row block of a Dense forward: the bias seeded into C (= z, or y when z is null) so the GEMM
// adds into it (beta = 1: no extra pass), then the activation row by row from C into y. The very
// calls dense_forward makes for the whole product, restricted to these rows.
void dense_rows(const float* x, const float* W, const float* b, float* z, float* y, int rows,
                int K, int N, Activation act) {
  float* c = z ? z : y;
  if (b) {
    for (int i = 0; i < rows; ++i) std::memcpy(c + static_cast<int64_t>(i) * N, b, sizeof(float) * N);
  }
  blas_sgemm(false, false, rows, N, K, 1.f, x, K, W, N, b ? 1.f : 0.f, c, N);
  if (act == Activation::kLinear && c == y) return;
  for (int i = 0; i < rows; ++i) {
    const int64_t o = static_cast<int64_t>(i) * N;
    act_row(act, c + o, y + o, N);
  }
}

}  // namespace

void dense_forward(const float* x, const float* W, const float* b, float* z, float* y, int M, int K,
                   int N, Activation act) {
  FlushDenormals fz;
  const int block = gemm_row_block(M, N, K);
  if (block > 0) {
    // gemm would run one row block per thread: each thread also seeds and activates its rows,
    // in the one parallel region (one fork and join instead of three passes).
    const int nblocks = (M + block - 1) / block;
#pragma omp parallel num_threads(num_threads())
    {
      FlushDenormals fz_thread;
#pragma omp for schedule(static)
      for (int blk = 0; blk < nblocks; ++blk) {
        const int r0 = blk * block;
        const int64_t o = static_cast<int64_t>(r0) * N;
        dense_rows(x + static_cast<int64_t>(r0) * K, W, b, z ? z + o : nullptr, y + o,
                   std::min(block, M - r0), K, N, act);
      }
    }
    return;
  }
  float* c = z ? z : y;
  if (b) {
    // Seed C with the bias so the GEMM adds into it (beta = 1): the bias costs no extra pass.
    for (int i = 0; i < M; ++i) std::memcpy(c + static_cast<int64_t>(i) * N, b, sizeof(float) * N);
  }
  gemm(false, false, M, N, K, 1.f, x, K, W, N, b ? 1.f : 0.f, c, N);
  activation_forward(act, c, y, M, N);
}

namespace {

// Rows per BLAS call in a chain with packed weights: packed products of 256 rows run at least as
// fast as larger ones (MKL 2026.2, 1 thread, 784x512: 155 vs 146 GFLOP/s at 1000 rows).
constexpr int kPackedChunkRows = 256;

// dense_rows for one layer of a predict chain, its product through the layer's PackedB.
void chain_rows(const float* x, const DenseChainLayer& L, const PackedB& W, float* y, int rows) {
  const int N = L.N;
  if (L.b) {
    for (int i = 0; i < rows; ++i) std::memcpy(y + static_cast<int64_t>(i) * N, L.b, sizeof(float) * N);
  }
  W.multiply(rows, x, L.K, L.b ? 1.f : 0.f, y, N);
  if (L.act == Activation::kLinear) return;
  for (int i = 0; i < rows; ++i) {
    const int64_t o = static_cast<int64_t>(i) * N;
    act_row(L.act, y + o, y + o, N);
  }
}

}  // namespace

void dense_chain_forward(const float* x, int M, const DenseChainLayer* layers, int n_layers) {
  if (M <= 0 || n_layers <= 0) return;
  FlushDenormals fz;
  // The weights are fixed for the call: where the BLAS has a packed form and it pays (MKL, wide
  // layers, enough rows), each kernel is packed once here and every thread's rows use it; otherwise
  // PackedB makes the very BLAS calls dense_rows would (the same bits as layer by layer).
  std::unique_ptr<PackedB[]> packs(new PackedB[n_layers]);
  bool any_packed = false;
  for (int l = 0; l < n_layers; ++l) {
    packs[l].prepare(layers[l].W, layers[l].K, layers[l].N, layers[l].N, M);
    any_packed = any_packed || packs[l].packed();
  }
  int block;
  if (any_packed) {
    // Rows in fixed chunks whatever the thread count, each thread taking consecutive chunks: the
    // BLAS calls, hence the bits, do not depend on the thread count (a packed kernel's rows can
    // depend on the rows of its call: MKL's AVX2 path, 1000 rows in blocks of 512 vs 336).
    block = kPackedChunkRows;
  } else {
    // gemm's row blocks depend on M and the thread count alone: one block size for every layer.
    bool by_rows = true;
    for (int l = 0; l < n_layers && by_rows; ++l)
      by_rows = gemm_row_block(M, layers[l].N, layers[l].K) > 0;
    block = by_rows ? gemm_row_block(M, layers[0].N, layers[0].K) : 0;
  }
  if (block == 0) {
    const float* in = x;
    for (int l = 0; l < n_layers; ++l) {
      const DenseChainLayer& L = layers[l];
      dense_forward(in, L.W, L.b, nullptr, L.y, M, L.K, L.N, L.act);
      in = L.y;
    }
    return;
  }
  const int nblocks = (M + block - 1) / block;
#pragma omp parallel num_threads(num_threads())
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int blk = 0; blk < nblocks; ++blk) {
      const int r0 = blk * block;
      const int rows = std::min(block, M - r0);
      const float* in = x + static_cast<int64_t>(r0) * layers[0].K;
      for (int l = 0; l < n_layers; ++l) {
        const DenseChainLayer& L = layers[l];
        float* out = L.y + static_cast<int64_t>(r0) * L.N;
        chain_rows(in, L, packs[l], out, rows);
        in = out;
      }
    }
  }
}

void dense_forward(const float* x, const float* W, const float* b, float* y, int M, int K, int N,
                   Activation act) {
  dense_forward(x, W, b, nullptr, y, M, K, N, act);
}

void dense_backward(const float* x, const float* W, const float* y, const float* dy, float* dz,
                    float* dW, float* db, float* dx, int M, int K, int N, Activation act,
                    bool accumulate) {
  dense_backward(x, W, nullptr, y, dy, dz, dW, db, dx, M, K, N, act, accumulate);
}

void dense_backward(const float* x, const float* W, const float* z, const float* y, const float* dy,
                    float* dz, float* dW, float* db, float* dx, int M, int K, int N, Activation act,
                    bool accumulate) {
  if (activation_needs_z(act) && z == nullptr && M > 0 && N > 0)
    throw std::invalid_argument(std::string("dense_backward: '") +
                                kActivationNames[static_cast<int>(act)] +
                                "' needs the pre-activation values");
  FlushDenormals fz;
  const float* g = dy;
  if (act != Activation::kLinear) {
    activation_backward(act, z, y, dy, dz, M, N);
    g = dz;
  }
  // Column sums in row order: a fixed summation order, so results never depend on threads.
  const auto bias_grad = [&] {
    if (!db) return;
    if (!accumulate) std::memset(db, 0, sizeof(float) * N);
    for (int i = 0; i < M; ++i) {
      const float* gi = g + static_cast<int64_t>(i) * N;
      for (int j = 0; j < N; ++j) db[j] += gi[j];
    }
  };
  // dW (K x N) = x^T (K x M) . g (M x N) and dx (M x K) = g (M x N) . W^T (N x K) cost the same
  // flops: on two threads each takes one whole product (one fork for both, no product cut in
  // halves; the bias sums ride with dW). gemm gives the same bits however it splits a product.
  if (dx && num_threads() == 2 && 2.0 * M * N * K >= 2.5e5) {
#pragma omp parallel sections num_threads(2)
    {
#pragma omp section
      {
        FlushDenormals fz_thread;
        blas_sgemm(true, false, K, N, M, 1.f, x, K, g, N, accumulate ? 1.f : 0.f, dW, N);
        bias_grad();
      }
#pragma omp section
      {
        FlushDenormals fz_thread;
        blas_sgemm(false, true, M, K, N, 1.f, g, N, W, N, 0.f, dx, K);
      }
    }
    return;
  }
  gemm(true, false, K, N, M, 1.f, x, K, g, N, accumulate ? 1.f : 0.f, dW, N);
  bias_grad();
  if (dx) gemm(false, true, M, K, N, 1.f, g, N, W, N, 0.f, dx, K);
}

}  // namespace fastckpt
