// Normalization kernels: batch, layer and fixed-statistics normalization over the last axis.
//
// Every input is a row-major (rows, cols) matrix: the normalized axis is `cols` (the features),
// every leading axis of the layer's input is folded into `rows`. Reductions run in double over a
// fixed partition of the rows (chunks of kRowChunk), combined in chunk order: results do not
// depend on the thread count, so a resumed run is bit-identical on any machine size.
#pragma once

#include <cstdint>

namespace fastckpt {

// Per-column mean and (biased) variance over the rows whose `row_mask` byte is non-zero (all rows
// when row_mask is null), two passes as tf.nn.moments / tf.nn.weighted_moments. With no row
// selected, mean and variance are 0 (TF divides with div_no_nan). Returns the rows counted.
int64_t column_moments(const float* x, const uint8_t* row_mask, int64_t rows, int64_t cols,
                       float* mean, float* var);

// Batch normalization in training mode, statistics and normalization in one call:
// y = (x - mean) * rsqrt(var + eps) * gamma + beta with the batch's statistics. Writes the batch
// `mean` and `inv` = rsqrt(var + eps) (cols each; kept for the backward pass). When
// `moving_mean`/`moving_var` are given they move as tf.keras moves them:
// moving -= (moving - batch) * (1 - momentum), the variance first multiplied by `var_correction`
// (1, or n/(n-1) where tf.keras' fused kernel applies Bessel's correction). gamma/beta may be null
// (scale=False / center=False).
void batchnorm_forward_train(const float* x, const uint8_t* row_mask, int64_t rows, int64_t cols,
                             const float* gamma, const float* beta, float eps, float* y,
                             float* mean, float* inv, float* moving_mean, float* moving_var,
                             double momentum, float var_correction);

// Batch normalization with given statistics (inference): y = (x - mean) * rsqrt(var + eps) *
// gamma + beta. Writes `inv` (cols) when non-null.
void batchnorm_forward_infer(const float* x, int64_t rows, int64_t cols, const float* mean,
                             const float* var, const float* gamma, const float* beta, float eps,
                             float* y, float* inv);

// Gradients of either forward, one pass over (x, dy): dgamma = sum dy * xhat, dbeta = sum dy
// (each may be null), dx (may be null). `batch_stats`: the forward used the batch's statistics
// (of the rows selected by row_mask), so they are differentiated too; otherwise they were
// constants and dx = dy * gamma * inv.
void batchnorm_backward(const float* x, const float* dy, const uint8_t* row_mask, int64_t rows,
                        int64_t cols, const float* mean, const float* inv, const float* gamma,
                        bool batch_stats, float* dx, float* dgamma, float* dbeta);

// Layer normalization of each row: y = (x - mean_r) * inv_r * gamma + beta, inv_r =
// rsqrt(var_r + eps). Writes the per-row `mean` and `inv` (rows each) for the backward pass.
void layernorm_forward(const float* x, int64_t rows, int64_t cols, const float* gamma,
                       const float* beta, float eps, float* y, float* mean, float* inv);

// dx = inv * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma, per row; dgamma and dbeta
// (column sums of dy * xhat and dy) when non-null.
void layernorm_backward(const float* x, const float* dy, int64_t rows, int64_t cols,
                        const float* mean, const float* inv, const float* gamma, float* dx,
                        float* dgamma, float* dbeta);

// The Normalization layer: y = (x - mean) / max(sqrt(var), eps), or with `invert`
// y = mean + x * max(sqrt(var), eps). mean may be null (zero): its backward pass is this call on dy.
void normalize_forward(const float* x, int64_t rows, int64_t cols, const float* mean,
                       const float* var, float eps, bool invert, float* y);

}  // namespace fastckpt
