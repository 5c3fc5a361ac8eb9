// Broadcasting of one sample's dims against another's (the merge layers' dims of 1): expand an
// input to the output's dims, and sum an output-shaped gradient back to the input's dims.
// Row-major float32; `rows` samples, each of prod(in_dims) / prod(out_dims) elements.
#pragma once

#include <cstdint>
#include <vector>

namespace fastckpt {

// For each element of `out` dims, the index of the element of `in` dims it reads (same rank; each
// in dim is 1 or the out dim, checked by the caller).
std::vector<int64_t> broadcast_index(const std::vector<int64_t>& in, const std::vector<int64_t>& out);

// y[r, j] = x[r, idx[j]] for j < out_n.
void broadcast_expand(const float* x, int64_t in_n, const int64_t* idx, int64_t out_n, int64_t rows, float* y);
// dx[r, i] = sum of g[r, j] over j with idx[j] == i, in j order (deterministic).
void broadcast_reduce(const float* g, int64_t out_n, const int64_t* idx, int64_t in_n, int64_t rows, float* dx);

}  // namespace fastckpt
