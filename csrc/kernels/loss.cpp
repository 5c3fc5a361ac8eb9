#include "kernels/loss.h"

#include <algorithm>
#include <cmath>

namespace fastckpt {
namespace {

inline int argmax_row(const float* p, int n) {
  int best = 0;
  for (int j = 1; j < n; ++j)
    if (p[j] > p[best]) best = j;
  return best;
}

}  // namespace

int64_t sparse_ce(const float* pred, const int32_t* labels, int M, int N, bool from_logits,
                  float epsilon, float* losses, float* grad, float grad_scale, double* loss_sum) {
  int64_t correct = 0;
  double total = 0.0;
  for (int i = 0; i < M; ++i) {
    const float* z = pred + static_cast<int64_t>(i) * N;
    const int y = labels[i];
    if (argmax_row(z, N) == y) ++correct;
    float* g = grad ? grad + static_cast<int64_t>(i) * N : nullptr;
    if (from_logits) {
      float mx = z[0];
      for (int j = 1; j < N; ++j) mx = std::max(mx, z[j]);
      float s = 0.f;
      for (int j = 0; j < N; ++j) s += std::exp(z[j] - mx);
      const float lse = mx + std::log(s);
      const float li = lse - z[y];
      if (losses) losses[i] = li;
      total += li;
      if (g) {
        const float inv = 1.f / s;
        for (int j = 0; j < N; ++j) g[j] = std::exp(z[j] - mx) * inv * grad_scale;
        g[y] -= grad_scale;
      }
    } else {
      const float lo = epsilon, hi = 1.f - epsilon;
      float s = 0.f;
      for (int j = 0; j < N; ++j) s += std::min(std::max(z[j], lo), hi);
      const float py = std::min(std::max(z[y], lo), hi);
      const float li = std::log(s) - std::log(py);
      if (losses) losses[i] = li;
      total += li;
      if (g) {
        // d/dp_j [log(sum p) - log(p_y)] through the clip (zero where clipped).
        const float inv_s = 1.f / s;
        for (int j = 0; j < N; ++j) {
          const bool inside = z[j] > lo && z[j] < hi;
          float d = inv_s;
          if (j == y) d -= 1.f / py;
          g[j] = inside ? d * grad_scale : 0.f;
        }
      }
    }
  }
  if (loss_sum) *loss_sum += total;
  return correct;
}

int64_t sparse_accuracy_count(const float* pred, const int32_t* labels, int M, int N) {
  int64_t correct = 0;
  for (int i = 0; i < M; ++i)
    if (argmax_row(pred + static_cast<int64_t>(i) * N, N) == labels[i]) ++correct;
  return correct;
}

}  // namespace fastckpt
