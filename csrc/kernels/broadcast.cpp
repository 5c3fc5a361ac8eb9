#include "kernels/broadcast.h"

#include <algorithm>
#include <cstring>

#include "kernels/fpmode.h"
#include "kernels/threading.h"

namespace fastckpt {

std::vector<int64_t> broadcast_index(const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  int64_t total = 1;
  for (int64_t d : out) total *= d;
  std::vector<int64_t> idx(static_cast<size_t>(total));
  std::vector<int64_t> at(out.size(), 0);
  for (int64_t j = 0; j < total; ++j) {
    int64_t k = 0;
    for (size_t a = 0; a < out.size(); ++a) k = k * in[a] + (in[a] == 1 ? 0 : at[a]);
    idx[static_cast<size_t>(j)] = k;
    for (size_t a = out.size(); a-- > 0;) {
      if (++at[a] < out[a]) break;
      at[a] = 0;
    }
  }
  return idx;
}

namespace {
// Rows in parallel when there is enough work; each row is written by one thread only.
template <typename Fn>
void for_rows(int64_t rows, int64_t per_row, Fn fn) {
  FlushDenormals fz;
  const int64_t work = rows * per_row;
  const int nt = work >= (1 << 15) ? static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), rows))) : 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) fn(r);
  }
}
}  // namespace

void broadcast_expand(const float* x, int64_t in_n, const int64_t* idx, int64_t out_n, int64_t rows, float* y) {
  for_rows(rows, out_n, [&](int64_t r) {
    const float* xr = x + r * in_n;
    float* yr = y + r * out_n;
    for (int64_t j = 0; j < out_n; ++j) yr[j] = xr[idx[j]];
  });
}

void broadcast_reduce(const float* g, int64_t out_n, const int64_t* idx, int64_t in_n, int64_t rows, float* dx) {
  for_rows(rows, out_n, [&](int64_t r) {
    const float* gr = g + r * out_n;
    float* dr = dx + r * in_n;
    std::memset(dr, 0, static_cast<size_t>(in_n) * sizeof(float));
    for (int64_t j = 0; j < out_n; ++j) dr[idx[j]] += gr[j];
  });
}

}  // namespace fastckpt
