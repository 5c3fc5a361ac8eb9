#include "kernels/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/dropout.h"
#include "kernels/fpmode.h"
#include "kernels/threading.h"

namespace fastckpt {
namespace {

// Elementwise loops fork only when there is enough work to pay for it.
inline bool worth_parallel(int64_t elems) { return elems >= (1 << 15); }

// Runs fn(b, e) over [0, n) split in contiguous ranges, in parallel for large n. fn must write only
// its range; every result is independent of the split.
template <typename Fn>
void for_ranges(int64_t n, Fn fn) {
  FlushDenormals fz;
  if (!worth_parallel(n)) {
    fn(int64_t{0}, n);
    return;
  }
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), n >> 13)));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int t = 0; t < nt; ++t) fn(n * t / nt, n * (t + 1) / nt);
  }
}

constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;

void alpha_dropout_coeffs(float rate, float* a, float* b) {
  const double alpha_p = -kSeluAlpha * kSeluScale;
  const double r = rate;
  const double av = std::pow((1.0 - r) * (1.0 + r * alpha_p * alpha_p), -0.5);
  *a = static_cast<float>(av);
  *b = static_cast<float>(-av * alpha_p * r);
}

// The four Philox lanes of counter c as uniform 24-bit integers' source words.
inline void block(uint64_t c, uint64_t seed, uint32_t out[4]) { philox4x32(c, 0, seed, out); }

// Calls put(i, lanes) for the Philox block of every element i in [b, e) at position offset + i:
// each block is computed once per range.
template <typename Put>
void for_blocks(int64_t b, int64_t e, uint64_t seed, uint64_t offset, Put put) {
  if (b >= e) return;
  uint32_t r[4];
  uint64_t cur = ~uint64_t{0};
  for (int64_t i = b; i < e; ++i) {
    const uint64_t g = offset + static_cast<uint64_t>(i);
    const uint64_t c = g >> 2;
    if (c != cur) {
      block(c, seed, r);
      cur = c;
    }
    put(i, r, static_cast<int>(g & 3));
  }
}

// Box-Muller on lanes (0, 1) and (2, 3): lane l gets the cos (even) or sin (odd) of its pair.
inline float normal_of(const uint32_t r[4], int lane) {
  const int p = lane & ~1;
  const float u1 = (static_cast<float>(r[p] >> 8) + 1.f) * (1.f / 16777216.f);  // (0, 1]
  const float u2 = static_cast<float>(r[p + 1] >> 8) * (1.f / 16777216.f);        // [0, 1)
  const float rad = std::sqrt(-2.f * std::log(u1));
  const float theta = 6.28318530717958647692f * u2;
  return (lane & 1) ? rad * std::sin(theta) : rad * std::cos(theta);
}

}  // namespace

void relu_forward(const float* x, float* y, int64_t n, float negative_slope, bool has_max,
                  float max_value, float threshold) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float v = x[i];
      float a = threshold != 0.f ? (v > threshold ? v : 0.f) : (v > 0.f ? v : 0.f);
      if (has_max) a = std::min(std::max(a, 0.f), max_value);
      if (negative_slope != 0.f) {
        const float neg = threshold - v;
        a -= negative_slope * (neg > 0.f ? neg : 0.f);
      }
      y[i] = a;
    }
  });
}

void relu_backward(const float* x, const float* dy, float* dx, int64_t n, float negative_slope,
                   bool has_max, float max_value, float threshold) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float v = x[i];
      // Where the relu part passes v (v > threshold), the clip passes it when 0 <= v <= max_value.
      float d = (v > threshold && (!has_max || (v >= 0.f && v <= max_value))) ? 1.f : 0.f;
      if (negative_slope != 0.f && threshold - v > 0.f) d += negative_slope;
      dx[i] = dy[i] * d;
    }
  });
}

void elu_forward(const float* x, float* y, int64_t n, float alpha) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = x[i] > 0.f ? x[i] : alpha * std::expm1(x[i]);
  });
}

void elu_backward(const float* x, const float* dy, float* dx, int64_t n, float alpha) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dx[i] = x[i] > 0.f ? dy[i] : dy[i] * alpha * std::exp(x[i]);
  });
}

void prelu_forward(const float* x, const float* alpha, const int64_t* idx, float* y, int64_t batch,
                   int64_t per) {
  for_ranges(batch * per, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float v = x[i];
      y[i] = v > 0.f ? v : alpha[idx[i % per]] * v;
    }
  });
}

void prelu_backward(const float* x, const float* alpha, const int64_t* idx, const float* dy,
                    float* dx, float* d_alpha, int64_t alpha_size, int64_t batch, int64_t per) {
  FlushDenormals fz;
  if (d_alpha) {
    std::memset(d_alpha, 0, sizeof(float) * alpha_size);
    for (int64_t s = 0; s < batch; ++s) {
      const float* xs = x + s * per;
      const float* gs = dy + s * per;
      for (int64_t j = 0; j < per; ++j)
        if (xs[j] < 0.f) d_alpha[idx[j]] += gs[j] * xs[j];
    }
  }
  if (dx) {
    for_ranges(batch * per, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dx[i] = x[i] > 0.f ? dy[i] : alpha[idx[i % per]] * dy[i];
    });
  }
}

void softmax_axis_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  for_ranges(outer * inner, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t o = r / inner, c = r % inner;
      const float* xr = x + o * n * inner + c;
      float* yr = y + o * n * inner + c;
      float mx = xr[0];
      for (int64_t j = 1; j < n; ++j) mx = std::max(mx, xr[j * inner]);
      float s = 0.f;
      for (int64_t j = 0; j < n; ++j) {
        const float ev = std::exp(xr[j * inner] - mx);
        yr[j * inner] = ev;
        s += ev;
      }
      const float inv = 1.f / s;
      for (int64_t j = 0; j < n; ++j) yr[j * inner] *= inv;
    }
  });
}

void softmax_axis_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t n,
                           int64_t inner) {
  for_ranges(outer * inner, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t o = r / inner, c = r % inner;
      const int64_t base = o * n * inner + c;
      float dot = 0.f;
      for (int64_t j = 0; j < n; ++j) dot += dy[base + j * inner] * y[base + j * inner];
      for (int64_t j = 0; j < n; ++j)
        dx[base + j * inner] = y[base + j * inner] * (dy[base + j * inner] - dot);
    }
  });
}

void scale_offset(const float* x, float* y, int64_t n, float scale, float offset) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = x[i] * scale + offset;
  });
}

void multiply(const float* a, const float* b_, float* y, int64_t n) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = a[i] * b_[i];
  });
}

void merge_forward(MergeOp op, const float* const* xs, int k, float* y, int64_t n) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float acc = xs[0][i];
      for (int t = 1; t < k; ++t) {
        const float v = xs[t][i];
        switch (op) {
          case MergeOp::kAdd: case MergeOp::kAverage: acc += v; break;
          case MergeOp::kSubtract: acc -= v; break;
          case MergeOp::kMultiply: acc *= v; break;
          case MergeOp::kMaximum: acc = std::max(acc, v); break;
          case MergeOp::kMinimum: acc = std::min(acc, v); break;
        }
      }
      if (op == MergeOp::kAverage) acc /= static_cast<float>(k);
      y[i] = acc;
    }
  });
}

void merge_backward(MergeOp op, const float* const* xs, int k, const float* dy, float* const* dxs,
                    int64_t n) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float g = dy[i];
      switch (op) {
        case MergeOp::kAdd:
          for (int t = 0; t < k; ++t) dxs[t][i] = g;
          break;
        case MergeOp::kAverage: {
          const float gk = g / static_cast<float>(k);
          for (int t = 0; t < k; ++t) dxs[t][i] = gk;
          break;
        }
        case MergeOp::kSubtract:
          dxs[0][i] = g;
          for (int t = 1; t < k; ++t) dxs[t][i] = -g;
          break;
        case MergeOp::kMultiply:
          for (int t = 0; t < k; ++t) {
            float p = g;
            for (int u = 0; u < k; ++u)
              if (u != t) p *= xs[u][i];
            dxs[t][i] = p;
          }
          break;
        case MergeOp::kMaximum:
        case MergeOp::kMinimum: {
          int best = 0;
          for (int t = 1; t < k; ++t) {
            const bool better = op == MergeOp::kMaximum ? xs[t][i] > xs[best][i] : xs[t][i] < xs[best][i];
            if (better) best = t;
          }
          for (int t = 0; t < k; ++t) dxs[t][i] = t == best ? g : 0.f;
          break;
        }
      }
    }
  });
}

void concat_forward(const float* const* xs, const int64_t* widths, int k, int64_t outer, float* y) {
  int64_t total = 0;
  for (int t = 0; t < k; ++t) total += widths[t];
  for_ranges(outer, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      float* dst = y + o * total;
      for (int t = 0; t < k; ++t) {
        std::memcpy(dst, xs[t] + o * widths[t], sizeof(float) * widths[t]);
        dst += widths[t];
      }
    }
  });
}

void concat_backward(const float* dy, const int64_t* widths, int k, int64_t outer, float* const* dxs) {
  int64_t total = 0;
  for (int t = 0; t < k; ++t) total += widths[t];
  for_ranges(outer, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const float* src = dy + o * total;
      for (int t = 0; t < k; ++t) {
        if (dxs[t]) std::memcpy(dxs[t] + o * widths[t], src, sizeof(float) * widths[t]);
        src += widths[t];
      }
    }
  });
}

void normal_fill(float* out, int64_t n, uint64_t seed, uint64_t offset) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for_blocks(b, e, seed, offset,
               [&](int64_t i, const uint32_t* r, int lane) { out[i] = normal_of(r, lane); });
  });
}

void gaussian_noise_forward(const float* x, float* y, int64_t n, float stddev, uint64_t seed,
                            uint64_t offset) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for_blocks(b, e, seed, offset, [&](int64_t i, const uint32_t* r, int lane) {
      y[i] = x[i] + stddev * normal_of(r, lane);
    });
  });
}

void gaussian_dropout_forward(const float* x, float* y, float* noise, int64_t n, float stddev,
                              uint64_t seed, uint64_t offset) {
  for_ranges(n, [&](int64_t b, int64_t e) {
    for_blocks(b, e, seed, offset, [&](int64_t i, const uint32_t* r, int lane) {
      const float m = 1.f + stddev * normal_of(r, lane);
      noise[i] = m;
      y[i] = x[i] * m;
    });
  });
}

void alpha_dropout_forward(const float* x, float* y, uint8_t* mask, int64_t n, float rate,
                           uint64_t seed, uint64_t offset) {
  float a, bb;
  alpha_dropout_coeffs(rate, &a, &bb);
  const float alpha_p = static_cast<float>(-kSeluAlpha * kSeluScale);
  // Keep when a 24-bit uniform integer is >= rate * 2^24 (the Dropout rule).
  const uint32_t threshold = static_cast<uint32_t>(static_cast<double>(rate) * 16777216.0);
  for_ranges(n, [&](int64_t b, int64_t e) {
    for_blocks(b, e, seed, offset, [&](int64_t i, const uint32_t* r, int lane) {
      const uint8_t keep = (r[lane] >> 8) >= threshold;
      mask[i] = keep;
      y[i] = a * (keep ? x[i] : alpha_p) + bb;
    });
  });
}

void alpha_dropout_backward(const float* dy, const uint8_t* mask, float* dx, int64_t n, float rate) {
  float a, bb;
  alpha_dropout_coeffs(rate, &a, &bb);
  for_ranges(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dx[i] = mask[i] ? dy[i] * a : 0.f;
  });
}

}  // namespace fastckpt
