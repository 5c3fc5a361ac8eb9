#include "kernels/embed_pool.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/fpmode.h"
#include "kernels/threading.h"

namespace fastckpt {

namespace {

inline bool worth_parallel(int64_t elems) { return elems >= (1 << 15); }

int64_t first_bad_id(const int32_t* ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || static_cast<int64_t>(ids[i]) >= vocab) return i;
  return -1;
}

}  // namespace

int64_t embedding_gather(const int32_t* ids, int64_t n, const float* table, int64_t vocab,
                         int64_t dim, float* out) {
  const int64_t bad = first_bad_id(ids, n, vocab);
  if (bad >= 0) return bad;
#pragma omp parallel for num_threads(num_threads()) schedule(static) if (worth_parallel(n * dim))
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * dim, table + static_cast<int64_t>(ids[i]) * dim, sizeof(float) * dim);
  return -1;
}

int64_t embedding_scatter_add(const int32_t* ids, int64_t n, const float* dy, int64_t vocab,
                              int64_t dim, float* dtable) {
  FlushDenormals fz;
  const int64_t bad = first_bad_id(ids, n, vocab);
  if (bad >= 0) return bad;
  std::memset(dtable, 0, sizeof(float) * vocab * dim);
  // Threads own disjoint column ranges and walk the ids in order: no races, and each element's
  // sum has the same order whatever the thread count.
  const int64_t nt = std::max<int64_t>(
      1, std::min<int64_t>({static_cast<int64_t>(num_threads()), dim / 16, (n * dim) >> 15}));
#pragma omp parallel num_threads(static_cast<int>(nt)) if (nt > 1)
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t c0 = dim * t / nt, c1 = dim * (t + 1) / nt;
      for (int64_t i = 0; i < n; ++i) {
        float* row = dtable + static_cast<int64_t>(ids[i]) * dim;
        const float* g = dy + i * dim;
        for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
      }
    }
  }
  return -1;
}

void gap1d_forward(const float* x, const uint8_t* mask, int64_t B, int64_t T, int64_t C, float* y) {
  FlushDenormals fz;
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(B * T * C))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      float* yb = y + b * C;
      std::fill(yb, yb + C, 0.f);
      float count = 0.f;
      for (int64_t t = 0; t < T; ++t) {
        if (mask && !mask[b * T + t]) continue;
        count += 1.f;
        const float* xt = x + (b * T + t) * C;
        for (int64_t c = 0; c < C; ++c) yb[c] += xt[c];
      }
      for (int64_t c = 0; c < C; ++c) yb[c] /= count;
    }
  }
}

void gap1d_backward(const float* dy, const uint8_t* mask, int64_t B, int64_t T, int64_t C,
                    float* dx) {
  FlushDenormals fz;
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(B * T * C))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      float count = 0.f;
      for (int64_t t = 0; t < T; ++t) count += (!mask || mask[b * T + t]) ? 1.f : 0.f;
      const float* g = dy + b * C;
      for (int64_t t = 0; t < T; ++t) {
        float* d = dx + (b * T + t) * C;
        if (mask && !mask[b * T + t]) {
          std::fill(d, d + C, 0.f);
        } else {
          for (int64_t c = 0; c < C; ++c) d[c] = g[c] / count;
        }
      }
    }
  }
}

void gmp1d_forward(const float* x, int64_t B, int64_t T, int64_t C, float* y) {
  FlushDenormals fz;
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(B * T * C))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      float* yb = y + b * C;
      const float* x0 = x + b * T * C;
      std::copy(x0, x0 + C, yb);
      for (int64_t t = 1; t < T; ++t) {
        const float* xt = x0 + t * C;
        for (int64_t c = 0; c < C; ++c) yb[c] = xt[c] > yb[c] ? xt[c] : yb[c];
      }
    }
  }
}

void gmp1d_backward(const float* x, const float* y, const float* dy, int64_t B, int64_t T,
                    int64_t C, float* dx) {
  FlushDenormals fz;
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(B * T * C))
  {
    FlushDenormals fz_thread;
    std::vector<float> ties(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const float* x0 = x + b * T * C;
      const float* yb = y + b * C;
      std::fill(ties.begin(), ties.end(), 0.f);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < C; ++c) ties[c] += x0[t * C + c] == yb[c] ? 1.f : 0.f;
      for (int64_t t = 0; t < T; ++t) {
        float* d = dx + (b * T + t) * C;
        for (int64_t c = 0; c < C; ++c)
          d[c] = x0[t * C + c] == yb[c] ? dy[b * C + c] / ties[c] : 0.f;
      }
    }
  }
}

}  // namespace fastckpt
