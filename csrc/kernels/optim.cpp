#include "kernels/optim.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

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

FASTCKPT_CLONES
void rmsprop_range(float* __restrict var, const float* __restrict grad, float* __restrict vel,
                   float* __restrict mom, float* __restrict ag, int64_t b, int64_t e, float lr,
                   float rho, float one_rho, float momentum, float eps) {
  for (int64_t i = b; i < e; ++i) {
    const float g = grad[i];
    const float vi = rho * vel[i] + one_rho * (g * g);
    vel[i] = vi;
    float den;
    if (ag) {
      const float a = rho * ag[i] + one_rho * g;
      ag[i] = a;
      den = (vi - a * a) + eps;
    } else {
      den = vi + eps;
    }
    const float inc = (lr * g) * (1.f / std::sqrt(den));
    if (mom) {
      const float mi = momentum * mom[i] + inc;
      mom[i] = mi;
      var[i] += -mi;
    } else {
      var[i] += -inc;
    }
  }
}

FASTCKPT_CLONES
void adagrad_range(float* __restrict var, const float* __restrict grad, float* __restrict acc,
                   int64_t b, int64_t e, float lr, float eps) {
  for (int64_t i = b; i < e; ++i) {
    const float g = grad[i];
    const float a = acc[i] + g * g;
    acc[i] = a;
    var[i] -= (lr * g) / std::sqrt(a + eps);
  }
}

FASTCKPT_CLONES
void adadelta_range(float* __restrict var, const float* __restrict grad, float* __restrict ag,
                    float* __restrict adv, int64_t b, int64_t e, float lr, float rho,
                    float one_rho, float eps) {
  for (int64_t i = b; i < e; ++i) {
    const float g = grad[i];
    const float a = rho * ag[i] + (one_rho * g) * g;
    ag[i] = a;
    const float d = (-std::sqrt(adv[i] + eps) * g) / std::sqrt(a + eps);
    adv[i] = rho * adv[i] + (one_rho * d) * d;
    var[i] += lr * d;
  }
}

FASTCKPT_CLONES
void adamax_range(float* __restrict var, const float* __restrict grad, float* __restrict m,
                  float* __restrict u, int64_t b, int64_t e, float lr, float one_b1, float b2,
                  float one_b1p, float eps) {
  for (int64_t i = b; i < e; ++i) {
    const float g = grad[i];
    const float mi = m[i] + (g - m[i]) * one_b1;
    m[i] = mi;
    const float ui = std::max(b2 * u[i], std::fabs(g));
    u[i] = ui;
    var[i] -= (lr * mi) / (one_b1p * (ui + eps));
  }
}

FASTCKPT_CLONES
void nadam_range(float* __restrict var, const float* __restrict grad, float* __restrict m,
                 float* __restrict v, int64_t b, int64_t e, NadamParams p) {
  for (int64_t i = b; i < e; ++i) {
    const float g = grad[i];
    const float mi = m[i] + (g - m[i]) * p.one_b1;
    const float vi = v[i] + (g * g - v[i]) * p.one_b2;
    m[i] = mi;
    v[i] = vi;
    const float mhat = (p.u_next * mi) / p.den_next + (p.one_u * g) / p.den;
    const float vhat = vi / p.one_b2p;
    var[i] -= (mhat * p.lr) / (std::sqrt(vhat) + p.epsilon);
  }
}

FASTCKPT_CLONES
void ftrl_range(float* __restrict var, const float* __restrict grad, float* __restrict acc,
                float* __restrict lin, int64_t b, int64_t e, FtrlParams p) {
  for (int64_t i = b; i < e; ++i) {
    const float g = grad[i], w = var[i], a = acc[i];
    const float gs = g + p.shrink2 * w;
    const float na = a + g * g;
    const float pn = std::pow(na, p.power);
    const float li = lin[i] + (gs - ((pn - std::pow(a, p.power)) / p.lr) * w);
    lin[i] = li;
    const float quad = pn / p.lr + p.l2x2;
    const float clipped = std::min(std::max(li, -p.l1), p.l1);
    var[i] = (clipped - li) / quad;
    acc[i] = na;
  }
}

FASTCKPT_CLONES
void lion_range(float* __restrict var, const float* __restrict grad, float* __restrict m,
                int64_t b, int64_t e, float lr, float b1, float one_b1, float b2, float one_b2) {
  for (int64_t i = b; i < e; ++i) {
    const float g = grad[i], mi = m[i];
    const float c = mi * b1 + g * one_b1;
    const float s = c > 0.f ? 1.f : (c < 0.f ? -1.f : c);  // sign; keeps 0 and NaN
    var[i] -= lr * s;
    m[i] = mi * b2 + g * one_b2;
  }
}

FASTCKPT_CLONES
void scale_div_range(const float* __restrict x, float* __restrict out, int64_t b, int64_t e,
                     float mul, float div) {
  for (int64_t i = b; i < e; ++i) out[i] = (x[i] * mul) / div;
}

FASTCKPT_CLONES
void clip_range(const float* __restrict x, float* __restrict out, int64_t b, int64_t e, float lo,
                float hi) {
  for (int64_t i = b; i < e; ++i) out[i] = std::min(std::max(x[i], lo), hi);
}

FASTCKPT_CLONES
void decay_range(float* __restrict var, int64_t b, int64_t e, float wd, float lr) {
  for (int64_t i = b; i < e; ++i) var[i] -= (var[i] * wd) * lr;
}

FASTCKPT_CLONES
void ema_range(float* __restrict avg, float* __restrict var, int64_t b, int64_t e, float mo,
               float one_m, bool overwrite) {
  for (int64_t i = b; i < e; ++i) {
    const float a = mo * avg[i] + one_m * var[i];
    avg[i] = a;
    if (overwrite) var[i] = a;
  }
}

FASTCKPT_CLONES
double sum_squares_range(const float* __restrict x, int64_t b, int64_t e) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = b;
  for (; i + 4 <= e; i += 4) {
    s0 += double(x[i]) * x[i];
    s1 += double(x[i + 1]) * x[i + 1];
    s2 += double(x[i + 2]) * x[i + 2];
    s3 += double(x[i + 3]) * x[i + 3];
  }
  for (; i < e; ++i) s0 += double(x[i]) * x[i];
  return (s0 + s1) + (s2 + s3);
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

// for_ranges for an update that also snapshots: each thread updates its range one block at a
// time and copies the block's arrays (still in L1) into dst with their CRCs; the per-thread CRCs
// are joined in range order afterwards.
template <typename F>
void for_ranges_snapshot(int64_t n, float* const arrays[4], const SnapshotSink& sink,
                         uint8_t* const dst[4], uint32_t crc[4], F&& update) {
  constexpr int64_t kBlock = 1024;  // floats per array per block: 5 arrays x 4 KiB stay in L1
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), n >> 15)));
  std::vector<std::array<uint32_t, 4>> part(static_cast<size_t>(nt), std::array<uint32_t, 4>{0, 0, 0, 0});
  const auto range = [&](int t) {
    const int64_t b = n * t / nt, e = n * (t + 1) / nt;
    auto& pc = part[static_cast<size_t>(t)];
    for (int64_t c = b; c < e; c += kBlock) {
      const int64_t ce = std::min(e, c + kBlock);
      update(c, ce);
      for (int k = 0; k < 4; ++k)
        if (dst[k] && arrays[k])
          pc[k] = sink.copy_crc(pc[k], dst[k] + c * sizeof(float), arrays[k] + c, static_cast<size_t>(ce - c) * sizeof(float));
    }
  };
  if (nt <= 1) {
    range(0);
  } else {
#pragma omp parallel num_threads(nt)
    {
      FlushDenormals fz_thread;
#pragma omp for schedule(static)
      for (int t = 0; t < nt; ++t) range(t);
    }
  }
  for (int k = 0; k < 4; ++k) {
    uint32_t c = part[0][k];
    for (int t = 1; t < nt; ++t) {
      const int64_t len = n * (t + 1) / nt - n * t / nt;
      c = sink.combine(c, part[static_cast<size_t>(t)][k], static_cast<uint64_t>(len) * sizeof(float));
    }
    crc[k] = c;
  }
}

// Adam's step size and decay complements at step t, in float32 as Keras computes them.
struct AdamStep {
  float alpha, one_b1, one_b2;
};

AdamStep adam_step(const AdamParams& p, int64_t t) {
  const float tf = static_cast<float>(t);
  const float b1p = std::pow(p.beta_1, tf), b2p = std::pow(p.beta_2, tf);
  return {p.learning_rate * std::sqrt(1.f - b2p) / (1.f - b1p), 1.f - p.beta_1, 1.f - p.beta_2};
}

}  // namespace

void adam_update_snapshot(float* var, const float* grad, float* m, float* v, float* vhat, int64_t n,
                          const AdamParams& p, int64_t t, const SnapshotSink& sink,
                          uint8_t* const dst[4], uint32_t crc[4]) {
  FlushDenormals fz;
  const AdamStep st = adam_step(p, t);
  const float alpha = st.alpha, one_b1 = st.one_b1, one_b2 = st.one_b2, eps = p.epsilon;
  float* vh = p.amsgrad ? vhat : nullptr;
  float* const arrays[4] = {var, m, v, vh};
  for_ranges_snapshot(n, arrays, sink, dst, crc, [&](int64_t b, int64_t e) {
    adam_range(var, grad, m, v, vh, b, e, alpha, one_b1, one_b2, eps);
  });
}

void sgd_update_snapshot(float* var, const float* grad, float* m, int64_t n, float learning_rate,
                         float momentum, bool nesterov, const SnapshotSink& sink,
                         uint8_t* const dst[4], uint32_t crc[4]) {
  FlushDenormals fz;
  float* mm = momentum == 0.f ? nullptr : m;
  float* const arrays[4] = {var, mm, nullptr, nullptr};
  for_ranges_snapshot(n, arrays, sink, dst, crc, [&](int64_t b, int64_t e) {
    sgd_range(var, grad, mm, b, e, learning_rate, momentum, nesterov);
  });
}

void adam_update(float* var, const float* grad, float* m, float* v, float* vhat, int64_t n,
                 const AdamParams& p, int64_t t) {
  FlushDenormals fz;
  const AdamStep st = adam_step(p, t);
  const float alpha = st.alpha, one_b1 = st.one_b1, one_b2 = st.one_b2, eps = p.epsilon;
  float* vh = p.amsgrad ? vhat : nullptr;
  for_ranges(n, [&](int64_t b, int64_t e) { adam_range(var, grad, m, v, vh, b, e, alpha, one_b1, one_b2, eps); });
}

void adam_update_many(const AdamSlice* vars, int count, const AdamParams& p, int64_t t) {
  FlushDenormals fz;
  const AdamStep st = adam_step(p, t);
  const float alpha = st.alpha, one_b1 = st.one_b1, one_b2 = st.one_b2, eps = p.epsilon;
  int64_t total = 0;
  for (int i = 0; i < count; ++i) total += vars[i].n;
  // Elements [b, e) of the variables laid end to end.
  const auto span = [&](int64_t b, int64_t e) {
    int64_t off = 0;
    for (int i = 0; i < count && off < e; ++i) {
      const AdamSlice& s = vars[i];
      const int64_t lo = std::max(b, off), hi = std::min(e, off + s.n);
      if (lo < hi)
        adam_range(s.var, s.grad, s.m, s.v, p.amsgrad ? s.vhat : nullptr, lo - off, hi - off, alpha,
                   one_b1, one_b2, eps);
      off += s.n;
    }
  };
  for_ranges(total, span);
}

void sgd_update(float* var, const float* grad, float* m, int64_t n, float learning_rate,
                float momentum, bool nesterov) {
  FlushDenormals fz;
  float* mm = momentum == 0.f ? nullptr : m;
  for_ranges(n, [&](int64_t b, int64_t e) { sgd_range(var, grad, mm, b, e, learning_rate, momentum, nesterov); });
}

void rmsprop_update(float* var, const float* grad, float* vel, float* mom, float* ag, int64_t n,
                    float lr, float rho, float one_rho, float momentum, float epsilon) {
  FlushDenormals fz;
  float* mm = momentum > 0.f ? mom : nullptr;
  for_ranges(n, [&](int64_t b, int64_t e) {
    rmsprop_range(var, grad, vel, mm, ag, b, e, lr, rho, one_rho, momentum, epsilon);
  });
}

void adagrad_update(float* var, const float* grad, float* acc, int64_t n, float lr, float epsilon) {
  FlushDenormals fz;
  for_ranges(n, [&](int64_t b, int64_t e) { adagrad_range(var, grad, acc, b, e, lr, epsilon); });
}

void adadelta_update(float* var, const float* grad, float* ag, float* adv, int64_t n, float lr,
                     float rho, float one_rho, float epsilon) {
  FlushDenormals fz;
  for_ranges(n, [&](int64_t b, int64_t e) { adadelta_range(var, grad, ag, adv, b, e, lr, rho, one_rho, epsilon); });
}

void adamax_update(float* var, const float* grad, float* m, float* u, int64_t n, float lr,
                   float one_b1, float beta_2, float one_b1p, float epsilon) {
  FlushDenormals fz;
  for_ranges(n, [&](int64_t b, int64_t e) { adamax_range(var, grad, m, u, b, e, lr, one_b1, beta_2, one_b1p, epsilon); });
}

void nadam_update(float* var, const float* grad, float* m, float* v, int64_t n, const NadamParams& p) {
  FlushDenormals fz;
  for_ranges(n, [&](int64_t b, int64_t e) { nadam_range(var, grad, m, v, b, e, p); });
}

void ftrl_update(float* var, const float* grad, float* acc, float* lin, int64_t n, const FtrlParams& p) {
  FlushDenormals fz;
  for_ranges(n, [&](int64_t b, int64_t e) { ftrl_range(var, grad, acc, lin, b, e, p); });
}

void lion_update(float* var, const float* grad, float* m, int64_t n, float lr, float beta_1,
                 float one_b1, float beta_2, float one_b2) {
  FlushDenormals fz;
  for_ranges(n, [&](int64_t b, int64_t e) { lion_range(var, grad, m, b, e, lr, beta_1, one_b1, beta_2, one_b2); });
}

double sum_squares(const float* x, int64_t n) {
  // Fixed blocks summed in a fixed order: the result does not depend on the thread count.
  constexpr int64_t kBlock = int64_t(1) << 15;
  const int64_t nb = (n + kBlock - 1) / kBlock;
  if (nb <= 1) return sum_squares_range(x, 0, n);
  std::vector<double> parts(static_cast<size_t>(nb));
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), nb)));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t k = 0; k < nb; ++k)
    parts[static_cast<size_t>(k)] = sum_squares_range(x, k * kBlock, std::min(n, (k + 1) * kBlock));
  double s = 0;
  for (double p : parts) s += p;
  return s;
}

void scale_div(const float* x, float* out, int64_t n, float mul, float div) {
  FlushDenormals fz;
  for_ranges(n, [&](int64_t b, int64_t e) { scale_div_range(x, out, b, e, mul, div); });
}

void clip_values(const float* x, float* out, int64_t n, float lo, float hi) {
  for_ranges(n, [&](int64_t b, int64_t e) { clip_range(x, out, b, e, lo, hi); });
}

void decay_weights(float* var, int64_t n, float wd, float lr) {
  FlushDenormals fz;
  for_ranges(n, [&](int64_t b, int64_t e) { decay_range(var, b, e, wd, lr); });
}

void ema_update(float* avg, float* var, int64_t n, float momentum, float one_m, bool overwrite) {
  FlushDenormals fz;
  for_ranges(n, [&](int64_t b, int64_t e) { ema_range(avg, var, b, e, momentum, one_m, overwrite); });
}

}  // namespace fastckpt
