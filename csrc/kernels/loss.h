// Sparse categorical cross-entropy, forward and backward fused, plus accuracy counting.
#pragma once

#include <cstdint>

namespace fastckpt {

// For each row i of `pred` (M x N), with integer label labels[i] in [0, N):
//   from_logits:  loss_i = logsumexp(z_i) - z_i[y_i]
//   else (Keras): p = clip(pred, eps, 1 - eps); loss_i = -log(p[y_i]) + log(sum_j p_j)
// Writes per-sample losses to `losses` (may be null) and, if `grad` is non-null, d(mean loss *
// grad_scale * M)/d pred, i.e. each row's gradient times grad_scale (pass 1/M for a batch mean).
// Returns the number of rows whose argmax (first maximum) equals the label, and adds the sum of
// the per-sample losses, in row order and in double precision, to *loss_sum (if non-null): one
// fixed summation order shared by every caller keeps reported losses identical across paths.
int64_t sparse_ce(const float* pred, const int32_t* labels, int M, int N, bool from_logits,
                  float epsilon, float* losses, float* grad, float grad_scale,
                  double* loss_sum = nullptr);

// Rows whose argmax (first maximum) equals the label.
int64_t sparse_accuracy_count(const float* pred, const int32_t* labels, int M, int N);

}  // namespace fastckpt
