#include "kernels/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/fpmode.h"
#include "kernels/simd.h"
#include "kernels/threading.h"

namespace fastckpt {

namespace {

inline bool worth_parallel(int64_t elems) { return elems >= (1 << 15); }

// Rows per reduction chunk: a function of `rows` only (never of the thread count), at least 256
// and at most 64 chunks, so partial sums stay small and the combined result is reproducible.
inline int64_t chunk_rows(int64_t rows) { return std::max<int64_t>(256, (rows + 63) / 64); }

// out[0:width] = sum over chunks (in chunk order) of fn(chunk_begin, chunk_end, partial), each
// partial a zeroed double[width] that fn adds its rows into.
template <class F>
void chunked_sums(int64_t rows, int64_t width, int64_t work, std::vector<double>& out, F fn) {
  const int64_t step = chunk_rows(rows);
  const int64_t nc = (rows + step - 1) / step;
  out.assign(static_cast<size_t>(width), 0.0);
  if (nc <= 1) {
    if (nc == 1) fn(int64_t(0), rows, out.data());
    return;
  }
  std::vector<double> part(static_cast<size_t>(nc * width), 0.0);
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(work))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nc; ++c)
      fn(c * step, std::min(rows, (c + 1) * step), part.data() + c * width);
  }
  for (int64_t c = 0; c < nc; ++c) {
    const double* p = part.data() + c * width;
    for (int64_t j = 0; j < width; ++j) out[j] += p[j];
  }
}

// y[r] = x[r] * scale + shift for every row.
void apply_affine(const float* x, int64_t rows, int64_t cols, const float* scale,
                  const float* shift, float* y) {
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(rows * cols))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      for (int64_t j = 0; j < cols; ++j) yr[j] = xr[j] * scale[j] + shift[j];
    }
  }
}

// Row reductions in double, as kLanes independent partial sums combined in a fixed order: the
// same result on every CPU (no FMA contraction, fixed lane count) and loops that vectorize,
// where one running sum is a serial chain of dependent adds.
constexpr int kLanes = 16;

inline double combine_lanes(const double* a) {
  double s = 0.0;
  for (int l = 0; l < kLanes; ++l) s += a[l];
  return s;
}

// sum of x[0:n]
FASTCKPT_CLONES
double row_sum(const float* __restrict x, int64_t n) {
  double a[kLanes] = {0.0};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) a[l] += x[j + l];
  for (int l = 0; j < n; ++j, ++l) a[l] += x[j];
  return combine_lanes(a);
}

// sum of (x - m)^2 over x[0:n], in double
FASTCKPT_CLONES
double row_sq_dev(const float* __restrict x, int64_t n, double m) {
  double a[kLanes] = {0.0};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const double d = x[j + l] - m;
      a[l] += d * d;
    }
  for (int l = 0; j < n; ++j, ++l) {
    const double d = x[j] - m;
    a[l] += d * d;
  }
  return combine_lanes(a);
}

// y = ((x - m) * iv) * gamma + beta (gamma / beta optional) over one row
FASTCKPT_CLONES
void row_normalize(const float* __restrict x, int64_t n, float m, float iv,
                   const float* __restrict gamma, const float* __restrict beta,
                   float* __restrict y) {
  if (gamma && beta) {
    for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - m) * iv) * gamma[j] + beta[j];
  } else if (gamma) {
    for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - m) * iv) * gamma[j] + 0.f;
  } else if (beta) {
    for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - m) * iv) + beta[j];
  } else {
    for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - m) * iv) + 0.f;
  }
}

// One row of LayerNorm's backward: adds dy and dy * xhat into the column sums a1, a2 (double),
// and, when dx is given, writes dx = iv * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma.
FASTCKPT_CLONES
void layernorm_backward_row(const float* __restrict x, const float* __restrict dy, int64_t n,
                            float m, float iv, const float* __restrict gamma,
                            double* __restrict a1, double* __restrict a2, float* __restrict dx) {
  if (!dx) {
    for (int64_t j = 0; j < n; ++j) {
      const float xh = (x[j] - m) * iv;
      a1[j] += dy[j];
      a2[j] += static_cast<double>(dy[j] * xh);
    }
    return;
  }
  // The column sums and the row's two sums in one pass over x and dy (each accumulator adds in
  // the same order as two separate passes would: the same bits).
  double sg[kLanes] = {0.0}, sgx[kLanes] = {0.0};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float d = dy[j + l];
      const float xh = (x[j + l] - m) * iv;
      a1[j + l] += d;
      a2[j + l] += static_cast<double>(d * xh);
      const float g = gamma ? d * gamma[j + l] : d;
      sg[l] += g;
      sgx[l] += static_cast<double>(g * xh);
    }
  for (int l = 0; j < n; ++j, ++l) {
    const float d = dy[j];
    const float xh = (x[j] - m) * iv;
    a1[j] += d;
    a2[j] += static_cast<double>(d * xh);
    const float g = gamma ? d * gamma[j] : d;
    sg[l] += g;
    sgx[l] += static_cast<double>(g * xh);
  }
  const float mg = static_cast<float>(combine_lanes(sg) / static_cast<double>(n));
  const float mgx = static_cast<float>(combine_lanes(sgx) / static_cast<double>(n));
  if (gamma) {
    for (int64_t k = 0; k < n; ++k) {
      const float xh = (x[k] - m) * iv;
      dx[k] = iv * ((dy[k] * gamma[k] - mg) - xh * mgx);
    }
  } else {
    for (int64_t k = 0; k < n; ++k) {
      const float xh = (x[k] - m) * iv;
      dx[k] = iv * ((dy[k] - mg) - xh * mgx);
    }
  }
}

int64_t count_rows(const uint8_t* row_mask, int64_t rows) {
  if (!row_mask) return rows;
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r) n += row_mask[r] != 0;
  return n;
}

}  // namespace

int64_t column_moments(const float* x, const uint8_t* row_mask, int64_t rows, int64_t cols,
                       float* mean, float* var) {
  FlushDenormals fz;
  const int64_t count = count_rows(row_mask, rows);
  std::vector<double> s, s2;
  chunked_sums(rows, cols, rows * cols, s, [&](int64_t b, int64_t e, double* acc) {
    for (int64_t r = b; r < e; ++r) {
      if (row_mask && !row_mask[r]) continue;
      const float* xr = x + r * cols;
      for (int64_t j = 0; j < cols; ++j) acc[j] += xr[j];
    }
  });
  std::vector<double> m(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) m[j] = count ? s[j] / static_cast<double>(count) : 0.0;
  chunked_sums(rows, cols, rows * cols, s2, [&](int64_t b, int64_t e, double* acc) {
    const double* mm = m.data();
    for (int64_t r = b; r < e; ++r) {
      if (row_mask && !row_mask[r]) continue;
      const float* xr = x + r * cols;
      for (int64_t j = 0; j < cols; ++j) {
        const double d = xr[j] - mm[j];
        acc[j] += d * d;
      }
    }
  });
  for (int64_t j = 0; j < cols; ++j) {
    mean[j] = static_cast<float>(m[j]);
    var[j] = count ? static_cast<float>(s2[j] / static_cast<double>(count)) : 0.f;
  }
  return count;
}

void batchnorm_forward_train(const float* x, const uint8_t* row_mask, int64_t rows, int64_t cols,
                             const float* gamma, const float* beta, float eps, float* y,
                             float* mean, float* inv, float* moving_mean, float* moving_var,
                             double momentum, float var_correction) {
  FlushDenormals fz;
  std::vector<float> var(static_cast<size_t>(cols)), scale(static_cast<size_t>(cols)),
      shift(static_cast<size_t>(cols));
  column_moments(x, row_mask, rows, cols, mean, var.data());
  for (int64_t j = 0; j < cols; ++j) {
    inv[j] = 1.f / std::sqrt(var[j] + eps);
    scale[j] = gamma ? inv[j] * gamma[j] : inv[j];
    shift[j] = (beta ? beta[j] : 0.f) - mean[j] * scale[j];
  }
  apply_affine(x, rows, cols, scale.data(), shift.data(), y);
  if (moving_mean && moving_var) {
    const float decay = static_cast<float>(1.0 - momentum);
    for (int64_t j = 0; j < cols; ++j) {
      moving_mean[j] -= (moving_mean[j] - mean[j]) * decay;
      moving_var[j] -= (moving_var[j] - var[j] * var_correction) * decay;
    }
  }
}

void batchnorm_forward_infer(const float* x, int64_t rows, int64_t cols, const float* mean,
                             const float* var, const float* gamma, const float* beta, float eps,
                             float* y, float* inv) {
  FlushDenormals fz;
  std::vector<float> scale(static_cast<size_t>(cols)), shift(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) {
    const float iv = 1.f / std::sqrt(var[j] + eps);
    if (inv) inv[j] = iv;
    scale[j] = gamma ? iv * gamma[j] : iv;
    shift[j] = (beta ? beta[j] : 0.f) - mean[j] * scale[j];
  }
  apply_affine(x, rows, cols, scale.data(), shift.data(), y);
}

void batchnorm_backward(const float* x, const float* dy, const uint8_t* row_mask, int64_t rows,
                        int64_t cols, const float* mean, const float* inv, const float* gamma,
                        bool batch_stats, float* dx, float* dgamma, float* dbeta) {
  FlushDenormals fz;
  // S1 = sum dy, S2 = sum dy * xhat over all rows (masked rows are normalized too).
  std::vector<double> s;
  chunked_sums(rows, 2 * cols, 2 * rows * cols, s, [&](int64_t b, int64_t e, double* acc) {
    double* a1 = acc;
    double* a2 = acc + cols;
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * cols;
      const float* gr = dy + r * cols;
      for (int64_t j = 0; j < cols; ++j) {
        const float xh = (xr[j] - mean[j]) * inv[j];
        a1[j] += gr[j];
        a2[j] += static_cast<double>(gr[j] * xh);
      }
    }
  });
  for (int64_t j = 0; j < cols; ++j) {
    if (dgamma) dgamma[j] = static_cast<float>(s[cols + j]);
    if (dbeta) dbeta[j] = static_cast<float>(s[j]);
  }
  if (!dx) return;
  const int64_t count = batch_stats ? count_rows(row_mask, rows) : 0;
  std::vector<float> a(static_cast<size_t>(cols)), k1(static_cast<size_t>(cols), 0.f),
      k2(static_cast<size_t>(cols), 0.f);
  for (int64_t j = 0; j < cols; ++j) {
    a[j] = gamma ? gamma[j] * inv[j] : inv[j];
    if (count > 0) {
      k1[j] = static_cast<float>(s[j] / static_cast<double>(count));
      k2[j] = static_cast<float>(s[cols + j] / static_cast<double>(count));
    }
  }
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(rows * cols))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * cols;
      const float* gr = dy + r * cols;
      float* dr = dx + r * cols;
      const float w = (count > 0 && (!row_mask || row_mask[r])) ? 1.f : 0.f;
      for (int64_t j = 0; j < cols; ++j) {
        const float xh = (xr[j] - mean[j]) * inv[j];
        dr[j] = a[j] * (gr[j] - w * (k1[j] + xh * k2[j]));
      }
    }
  }
}

void layernorm_forward(const float* x, int64_t rows, int64_t cols, const float* gamma,
                       const float* beta, float eps, float* y, float* mean, float* inv) {
  FlushDenormals fz;
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(rows * cols))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * cols;
      const double m = cols ? row_sum(xr, cols) / static_cast<double>(cols) : 0.0;
      const double s2 = row_sq_dev(xr, cols, m);
      const float mf = static_cast<float>(m);
      const float iv = 1.f / std::sqrt(static_cast<float>(cols ? s2 / static_cast<double>(cols) : 0.0) + eps);
      mean[r] = mf;
      inv[r] = iv;
      row_normalize(xr, cols, mf, iv, gamma, beta, y + r * cols);
    }
  }
}

void layernorm_backward(const float* x, const float* dy, int64_t rows, int64_t cols,
                        const float* mean, const float* inv, const float* gamma, float* dx,
                        float* dgamma, float* dbeta) {
  FlushDenormals fz;
  std::vector<double> s;
  chunked_sums(rows, 2 * cols, 3 * rows * cols, s, [&](int64_t b, int64_t e, double* acc) {
    for (int64_t r = b; r < e; ++r)
      layernorm_backward_row(x + r * cols, dy + r * cols, cols, mean[r], inv[r], gamma, acc,
                             acc + cols, dx ? dx + r * cols : nullptr);
  });
  for (int64_t j = 0; j < cols; ++j) {
    if (dgamma) dgamma[j] = static_cast<float>(s[cols + j]);
    if (dbeta) dbeta[j] = static_cast<float>(s[j]);
  }
}

void normalize_forward(const float* x, int64_t rows, int64_t cols, const float* mean,
                       const float* var, float eps, bool invert, float* y) {
  FlushDenormals fz;
  std::vector<float> sd(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) sd[j] = std::max(std::sqrt(var[j]), eps);
  const float* s = sd.data();
#pragma omp parallel num_threads(num_threads()) if (worth_parallel(rows * cols))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      if (invert) {
        for (int64_t j = 0; j < cols; ++j) yr[j] = (mean ? mean[j] : 0.f) + xr[j] * s[j];
      } else {
        for (int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - (mean ? mean[j] : 0.f)) / s[j];
      }
    }
  }
}

}  // namespace fastckpt
