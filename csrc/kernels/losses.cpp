#include "kernels/losses.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/fpmode.h"
#include "kernels/threading.h"

namespace fastckpt {
namespace {

// Rows are summed in blocks of this many, in block order: the same total on any thread count.
constexpr int64_t kBlockRows = 256;
// Parallel only when there is enough work to pay for the fork.
inline bool worth_parallel(int64_t elems) { return elems >= (1 << 15); }

constexpr float kLog2 = 0.6931471805599453f;

inline float clampf(float x, float lo, float hi) { return std::min(std::max(x, lo), hi); }
// Inside [lo, hi]: where TensorFlow's clip_by_value passes the gradient (bounds included).
inline bool inside(float x, float lo, float hi) { return x >= lo && x <= hi; }
inline float signf(float x) { return static_cast<float>((x > 0.f) - (x < 0.f)); }
// log(1 + exp(x)) without overflow.
inline float softplusf(float x) { return std::max(x, 0.f) + std::log1p(std::exp(-std::abs(x))); }

// --- one functor per loss: operator()(t, y, N, g, s) returns the row's loss and, when g is
// non-null, writes s * d loss / d y into g. -----------------------------------------------------

struct MeanSquared {
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    for (int64_t j = 0; j < N; ++j) {
      const float d = y[j] - t[j];
      acc += d * d;
    }
    if (g) {
      const float c = 2.f * (s / static_cast<float>(N));
      for (int64_t j = 0; j < N; ++j) g[j] = c * (y[j] - t[j]);
    }
    return static_cast<float>(acc / N);
  }
};

struct MeanAbsolute {
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    for (int64_t j = 0; j < N; ++j) acc += std::abs(y[j] - t[j]);
    if (g) {
      const float c = s / static_cast<float>(N);
      for (int64_t j = 0; j < N; ++j) g[j] = c * signf(y[j] - t[j]);
    }
    return static_cast<float>(acc / N);
  }
};

struct MeanAbsolutePercentage {
  float eps;
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    const float c = 100.f * (s / static_cast<float>(N));
    for (int64_t j = 0; j < N; ++j) {
      const float d = std::max(std::abs(t[j]), eps);
      const float u = (t[j] - y[j]) / d;
      acc += std::abs(u);
      if (g) g[j] = -c * signf(u) / d;
    }
    return static_cast<float>(100.0 * static_cast<double>(static_cast<float>(acc / N)));
  }
};

struct MeanSquaredLogarithmic {
  float eps;
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    const float c = 2.f * (s / static_cast<float>(N));
    for (int64_t j = 0; j < N; ++j) {
      const float yp = std::max(y[j], eps) + 1.f;
      const float d = std::log(yp) - std::log(std::max(t[j], eps) + 1.f);
      acc += d * d;
      if (g) g[j] = y[j] >= eps ? c * d / yp : 0.f;
    }
    return static_cast<float>(acc / N);
  }
};

struct Huber {
  float delta;
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    const float c = s / static_cast<float>(N);
    const float half_d2 = 0.5f * (delta * delta);
    for (int64_t j = 0; j < N; ++j) {
      const float e = y[j] - t[j];
      const float ae = std::abs(e);
      const bool quad = ae <= delta;
      acc += quad ? 0.5f * (e * e) : delta * ae - half_d2;
      if (g) g[j] = c * (quad ? e : delta * signf(e));
    }
    return static_cast<float>(acc / N);
  }
};

struct LogCosh {
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    const float c = s / static_cast<float>(N);
    for (int64_t j = 0; j < N; ++j) {
      const float x = y[j] - t[j];
      acc += x + softplusf(-2.f * x) - kLog2;
      if (g) g[j] = c * std::tanh(x);
    }
    return static_cast<float>(acc / N);
  }
};

struct Poisson {
  float eps;
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    const float c = s / static_cast<float>(N);
    for (int64_t j = 0; j < N; ++j) {
      const float yp = y[j] + eps;
      acc += y[j] - t[j] * std::log(yp);
      if (g) g[j] = c * (1.f - t[j] / yp);
    }
    return static_cast<float>(acc / N);
  }
};

// Hinge (squared = false) and SquaredHinge; `convert` maps {0, 1} labels to {-1, 1}.
struct Hinge {
  bool squared, convert;
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    const float c = s / static_cast<float>(N);
    for (int64_t j = 0; j < N; ++j) {
      const float lab = convert ? 2.f * t[j] - 1.f : t[j];
      const float m = 1.f - lab * y[j];
      const float h = std::max(m, 0.f);
      acc += squared ? h * h : h;
      // maximum(m, 0) passes the gradient to m where m >= 0 (TensorFlow's rule for ties).
      if (g) g[j] = m >= 0.f ? (squared ? -2.f * c * h * lab : -c * lab) : 0.f;
    }
    return static_cast<float>(acc / N);
  }
};

// Element-wise binary cross-entropy of one value (smoothed label tt) and its derivative with
// respect to the prediction (the logit when from_logits).
// `sig` is the probability: sigmoid(x) from logits, x itself otherwise.
struct BinaryElem {
  float loss, dloss, sig;
};

inline BinaryElem binary_elem(float tt, float x, bool from_logits, float eps, float hi) {
  if (from_logits) {
    // max(x, 0) - x t + log1p(exp(-|x|)); derivative sigmoid(x) - t. One exp serves both.
    const float e = std::exp(-std::abs(x));
    const float sig = x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
    return {std::max(x, 0.f) - x * tt + std::log1p(e), sig - tt, sig};
  }
  const float pc = clampf(x, eps, hi);
  const float a = pc + eps, b = 1.f - pc + eps;
  const float l = -(tt * std::log(a) + (1.f - tt) * std::log(b));
  return {l, inside(x, eps, hi) ? -tt / a + (1.f - tt) / b : 0.f, x};
}

struct BinaryCrossentropy {
  bool from_logits;
  float ls, eps;
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    const float c = s / static_cast<float>(N);
    const float hi = 1.f - eps;
    for (int64_t j = 0; j < N; ++j) {
      const float tt = ls != 0.f ? t[j] * (1.f - ls) + 0.5f * ls : t[j];
      const BinaryElem e = binary_elem(tt, y[j], from_logits, eps, hi);
      acc += e.loss;
      if (g) g[j] = c * e.dloss;
    }
    return static_cast<float>(acc / N);
  }
};

struct BinaryFocal {
  bool from_logits, balance;
  float ls, eps, alpha, gamma;
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    const float c = s / static_cast<float>(N);
    const float hi = 1.f - eps;
    for (int64_t j = 0; j < N; ++j) {
      const float tt = ls != 0.f ? t[j] * (1.f - ls) + 0.5f * ls : t[j];
      const BinaryElem e = binary_elem(tt, y[j], from_logits, eps, hi);
      const float sg = e.sig;
      const float pt = tt * sg + (1.f - tt) * (1.f - sg);
      const float q = 1.f - pt;
      const float focal = std::pow(q, gamma);
      const float w = balance ? tt * alpha + (1.f - tt) * (1.f - alpha) : 1.f;
      acc += w * (focal * e.loss);
      if (g) {
        // d focal / d sg = gamma q^(gamma-1) (1 - 2 tt); taken as 0 where q == 0 (TensorFlow
        // gives 0 there for gamma >= 1 and inf/nan below).
        float dfocal = q != 0.f ? gamma * std::pow(q, gamma - 1.f) * (1.f - 2.f * tt) : 0.f;
        if (from_logits) dfocal *= sg * (1.f - sg);
        g[j] = c * w * (dfocal * e.loss + focal * e.dloss);
      }
    }
    return static_cast<float>(acc / N);
  }
};

struct CategoricalCrossentropy {
  bool from_logits;
  float ls, eps;
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    const float add = ls != 0.f ? ls / static_cast<float>(N) : 0.f;
    const float keep = 1.f - ls;
    auto smooth = [&](float v) { return ls != 0.f ? v * keep + add : v; };
    if (from_logits) {
      float mx = y[0];
      for (int64_t j = 1; j < N; ++j) mx = std::max(mx, y[j]);
      double se = 0.0;
      for (int64_t j = 0; j < N; ++j) se += std::exp(y[j] - mx);
      const float lse = std::log(static_cast<float>(se));
      double acc = 0.0;
      for (int64_t j = 0; j < N; ++j) acc += smooth(t[j]) * (lse - (y[j] - mx));
      if (g) {
        // softmax - labels: TensorFlow's gradient of softmax_cross_entropy_with_logits (the
        // exact derivative when the labels sum to 1, as one-hot and smoothed labels do).
        const float inv = static_cast<float>(1.0 / se);
        for (int64_t j = 0; j < N; ++j) g[j] = s * (std::exp(y[j] - mx) * inv - smooth(t[j]));
      }
      return static_cast<float>(acc);
    }
    // Probabilities: normalised by their sum, clipped, -sum t log(q).
    double ssum = 0.0;
    for (int64_t j = 0; j < N; ++j) ssum += y[j];
    const float S = static_cast<float>(ssum);
    const float hi = 1.f - eps;
    double acc = 0.0, dot = 0.0;
    for (int64_t j = 0; j < N; ++j) {
      const float q = y[j] / S;
      const float qc = clampf(q, eps, hi);
      const float tt = smooth(t[j]);
      acc -= tt * std::log(qc);
      if (g) {
        const float G = inside(q, eps, hi) ? -tt / qc : 0.f;
        g[j] = G;  // d loss / d q for now
        dot += G * q;
      }
    }
    if (g) {
      // Through q = y / sum(y): d/dy_k = (G_k - sum_j G_j q_j) / S.
      const float d = static_cast<float>(dot);
      const float c = s / S;
      for (int64_t j = 0; j < N; ++j) g[j] = c * (g[j] - d);
    }
    return static_cast<float>(acc);
  }
};

struct KLDivergence {
  float eps;
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double acc = 0.0;
    for (int64_t j = 0; j < N; ++j) {
      const float tc = clampf(t[j], eps, 1.f);
      const float pc = clampf(y[j], eps, 1.f);
      acc += tc * std::log(tc / pc);
      if (g) g[j] = inside(y[j], eps, 1.f) ? -s * tc / pc : 0.f;
    }
    return static_cast<float>(acc);
  }
};

struct CosineSimilarity {
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    constexpr float kMinSq = 1e-12f;  // tf.math.l2_normalize's epsilon
    double st = 0.0, sp = 0.0;
    for (int64_t j = 0; j < N; ++j) {
      st += t[j] * t[j];
      sp += y[j] * y[j];
    }
    const float spf = static_cast<float>(sp);
    const float rt = 1.f / std::sqrt(std::max(static_cast<float>(st), kMinSq));
    const float rp = 1.f / std::sqrt(std::max(spf, kMinSq));
    double dot = 0.0;
    for (int64_t j = 0; j < N; ++j) dot += (t[j] * rt) * (y[j] * rp);
    if (g) {
      const float d = spf >= kMinSq ? static_cast<float>(dot) : 0.f;
      for (int64_t j = 0; j < N; ++j) g[j] = -s * rp * (t[j] * rt - d * (y[j] * rp));
    }
    return static_cast<float>(-dot);
  }
};

struct CategoricalHinge {
  float operator()(const float* t, const float* y, int64_t N, float* g, float s) const {
    double pos = 0.0;
    float neg = -INFINITY;
    for (int64_t j = 0; j < N; ++j) {
      pos += t[j] * y[j];
      neg = std::max(neg, (1.f - t[j]) * y[j]);
    }
    const float v = neg - static_cast<float>(pos) + 1.f;
    if (g) {
      if (v >= 0.f) {
        // reduce_max shares its gradient between tied maxima, as TensorFlow does.
        int64_t ties = 0;
        for (int64_t j = 0; j < N; ++j) ties += (1.f - t[j]) * y[j] == neg;
        const float share = ties ? 1.f / static_cast<float>(ties) : 0.f;
        for (int64_t j = 0; j < N; ++j) {
          const float a = (1.f - t[j]) * y[j];
          g[j] = s * ((a == neg ? (1.f - t[j]) * share : 0.f) - t[j]);
        }
      } else {
        for (int64_t j = 0; j < N; ++j) g[j] = 0.f;
      }
    }
    return std::max(v, 0.f);
  }
};

struct SparseCE {
  const int32_t* labels;
  bool from_logits;
  float eps;
  // Row i of labels is passed through `row`; y is the row of scores.
  float row(int32_t lab, const float* y, int64_t N, float* g, float s) const {
    if (lab < 0) {  // ignored
      if (g)
        for (int64_t j = 0; j < N; ++j) g[j] = 0.f;
      return 0.f;
    }
    if (from_logits) {
      float mx = y[0];
      for (int64_t j = 1; j < N; ++j) mx = std::max(mx, y[j]);
      double se = 0.0;
      for (int64_t j = 0; j < N; ++j) se += std::exp(y[j] - mx);
      const float lse = mx + std::log(static_cast<float>(se));
      if (g) {
        const float inv = static_cast<float>(1.0 / se);
        for (int64_t j = 0; j < N; ++j) g[j] = s * (std::exp(y[j] - mx) * inv);
        g[lab] -= s;
      }
      return lse - y[lab];
    }
    const float hi = 1.f - eps;
    double cs = 0.0;
    for (int64_t j = 0; j < N; ++j) cs += clampf(y[j], eps, hi);
    const float S = static_cast<float>(cs);
    const float cy = clampf(y[lab], eps, hi);
    if (g) {
      // d/dp_j [log(sum c) - log(c_y)] through the clip.
      const float inv_s = 1.f / S;
      for (int64_t j = 0; j < N; ++j) g[j] = inside(y[j], eps, hi) ? s * inv_s : 0.f;
      if (inside(y[lab], eps, hi)) g[lab] -= s / cy;
    }
    return std::log(S) - std::log(cy);
  }
};

// Runs `row(i, g, s) -> loss_i` over the rows; see dense_loss for the contract.
template <class RowFn>
double drive(const RowFn& row, int64_t M, int64_t N, const float* weights, float* losses,
             float* grad, float grad_scale) {
  FlushDenormals fz;
  auto block = [&](int64_t b) {
    double acc = 0.0;
    const int64_t lo = b * kBlockRows, hi = std::min(M, lo + kBlockRows);
    for (int64_t i = lo; i < hi; ++i) {
      const float w = weights ? weights[i] : 1.f;
      const float li = row(i, grad ? grad + i * N : nullptr, grad_scale * w);
      if (losses) losses[i] = li;
      acc += weights ? static_cast<double>(w) * li : static_cast<double>(li);
    }
    return acc;
  };
  const int64_t nblocks = (M + kBlockRows - 1) / kBlockRows;
  if (nblocks <= 1) return nblocks ? block(0) : 0.0;
  std::vector<double> part(static_cast<size_t>(nblocks));
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(M * N))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) part[b] = block(b);
  }
  double total = 0.0;
  for (double v : part) total += v;
  return total;
}

template <class F>
double drive_dense(const F& f, const float* t, const float* y, int64_t M, int64_t N,
                   const float* weights, float* losses, float* grad, float grad_scale) {
  return drive([&](int64_t i, float* g, float s) { return f(t + i * N, y + i * N, N, g, s); }, M,
               N, weights, losses, grad, grad_scale);
}

bool all_binary(const float* t, int64_t n) {
  for (int64_t k = 0; k < n; ++k)
    if (t[k] != 0.f && t[k] != 1.f) return false;
  return true;
}

}  // namespace

double dense_loss(const LossParams& p, const float* t, const float* y, int64_t M, int64_t N,
                  const float* weights, float* losses, float* grad, float grad_scale) {
  if (M <= 0 || N <= 0) return 0.0;
  auto run = [&](const auto& f) { return drive_dense(f, t, y, M, N, weights, losses, grad, grad_scale); };
  switch (p.kind) {
    case DenseLoss::kMeanSquaredError: return run(MeanSquared{});
    case DenseLoss::kMeanAbsoluteError: return run(MeanAbsolute{});
    case DenseLoss::kMeanAbsolutePercentageError: return run(MeanAbsolutePercentage{p.epsilon});
    case DenseLoss::kMeanSquaredLogarithmicError: return run(MeanSquaredLogarithmic{p.epsilon});
    case DenseLoss::kHuber: return run(Huber{p.delta});
    case DenseLoss::kLogCosh: return run(LogCosh{});
    case DenseLoss::kPoisson: return run(Poisson{p.epsilon});
    case DenseLoss::kHinge: return run(Hinge{false, all_binary(t, M * N)});
    case DenseLoss::kSquaredHinge: return run(Hinge{true, all_binary(t, M * N)});
    case DenseLoss::kBinaryCrossentropy:
      return run(BinaryCrossentropy{p.from_logits, p.label_smoothing, p.epsilon});
    case DenseLoss::kBinaryFocalCrossentropy:
      return run(BinaryFocal{p.from_logits, p.apply_class_balancing, p.label_smoothing, p.epsilon,
                             p.alpha, p.gamma});
    case DenseLoss::kCategoricalCrossentropy:
      return run(CategoricalCrossentropy{p.from_logits, p.label_smoothing, p.epsilon});
    case DenseLoss::kKLDivergence: return run(KLDivergence{p.epsilon});
    case DenseLoss::kCosineSimilarity: return run(CosineSimilarity{});
    case DenseLoss::kCategoricalHinge: return run(CategoricalHinge{});
  }
  return 0.0;
}

double sparse_ce_loss(const float* pred, const int32_t* labels, int64_t M, int64_t N,
                      bool from_logits, float epsilon, const float* weights, float* losses,
                      float* grad, float grad_scale) {
  if (M <= 0 || N <= 0) return 0.0;
  const SparseCE f{labels, from_logits, epsilon};
  return drive([&](int64_t i, float* g, float s) { return f.row(labels[i], pred + i * N, N, g, s); },
               M, N, weights, losses, grad, grad_scale);
}

}  // namespace fastckpt
