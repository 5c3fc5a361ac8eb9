// Embedding lookup (gather / scatter-add) and global 1D pooling over the steps of (B, T, C) inputs.
#pragma once

#include <cstdint>

namespace fastckpt {

// out[i, :] = table[ids[i], :] for i in [0, n). Every id is checked against [0, vocab) before
// anything is read or written: returns -1 on success, else the position of the first bad id
// (nothing written).
int64_t embedding_gather(const int32_t* ids, int64_t n, const float* table, int64_t vocab,
                         int64_t dim, float* out);

// dtable = 0, then dtable[ids[i], :] += dy[i, :] in order of i (deterministic; rows no id names
// stay zero). Returns -1, or the position of the first out-of-range id (nothing written).
int64_t embedding_scatter_add(const int32_t* ids, int64_t n, const float* dy, int64_t vocab,
                              int64_t dim, float* dtable);

// y[b, c] = mean over t of x[b, t, c]; with a mask (B, T) the mean over the steps whose mask byte
// is non-zero (sum(x * mask) / sum(mask), NaN when no step is selected, as Keras).
void gap1d_forward(const float* x, const uint8_t* mask, int64_t B, int64_t T, int64_t C, float* y);
void gap1d_backward(const float* dy, const uint8_t* mask, int64_t B, int64_t T, int64_t C,
                    float* dx);

// y[b, c] = max over t of x[b, t, c]. The gradient goes to the maximal steps, split evenly between
// ties (TensorFlow's reduce_max gradient).
void gmp1d_forward(const float* x, int64_t B, int64_t T, int64_t C, float* y);
void gmp1d_backward(const float* x, const float* y, const float* dy, int64_t B, int64_t T,
                    int64_t C, float* dx);

}  // namespace fastckpt
