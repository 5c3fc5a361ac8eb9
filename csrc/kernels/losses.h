// The Keras losses, forward and backward fused: one pass over each row computes the row's loss
// and, when asked, its gradient, with the numerics of tf.keras 2.x (float32 element math, the same
// epsilon clipping, and the gradient TensorFlow's autodiff gives through that clipping: zero where
// a clip is active, passed through on its bounds).
#pragma once

#include <cstdint>

namespace fastckpt {

// Losses that reduce the last axis of same-shaped y_true / y_pred. Codes are shared with Python
// (fastckpt/ops.py reads them from the extension).
enum class DenseLoss : int {
  kMeanSquaredError = 0,
  kMeanAbsoluteError = 1,
  kMeanAbsolutePercentageError = 2,
  kMeanSquaredLogarithmicError = 3,
  kHuber = 4,
  kLogCosh = 5,
  kPoisson = 6,
  kHinge = 7,
  kSquaredHinge = 8,
  kBinaryCrossentropy = 9,
  kBinaryFocalCrossentropy = 10,
  kCategoricalCrossentropy = 11,
  kKLDivergence = 12,
  kCosineSimilarity = 13,
  kCategoricalHinge = 14,
};

struct LossParams {
  DenseLoss kind = DenseLoss::kMeanSquaredError;
  bool from_logits = false;             // binary/categorical cross-entropies, focal
  float label_smoothing = 0.f;          // binary/categorical cross-entropies, focal
  float epsilon = 1e-7f;                // Keras' backend.epsilon()
  float delta = 1.f;                    // Huber
  float alpha = 0.25f, gamma = 2.f;     // focal
  bool apply_class_balancing = false;   // focal
};

// Rows of N values: y_true and y_pred are M x N, row-major. For each row i:
//   losses[i] (if non-null) = the row's loss (as Keras' per-sample loss function returns it),
//   grad row i (if non-null) = grad_scale * w_i * d loss_i / d y_pred row i,
// with w_i = weights[i] (or 1 when weights is null). Returns sum_i w_i * loss_i in double, summed
// in fixed blocks of rows so the result does not depend on the number of threads. Hinge and
// SquaredHinge map {0, 1} labels to {-1, 1} when every value of y_true is 0 or 1, as Keras.
// Rows run in parallel (OpenMP) when the work pays for it.
double dense_loss(const LossParams& p, const float* y_true, const float* y_pred, int64_t M,
                  int64_t N, const float* weights, float* losses, float* grad, float grad_scale);

// Sparse categorical cross-entropy over M rows of N scores with per-row weights and ignored
// rows: a label < 0 marks a row to ignore (loss 0, gradient 0); other labels must be in [0, N)
// (the caller checks). from_logits: loss = logsumexp(z) - z_y; else, as tf.keras, with
// c = clip(p, eps, 1 - eps): loss = log(sum c) - log(c_y). Same conventions as dense_loss.
double sparse_ce_loss(const float* pred, const int32_t* labels, int64_t M, int64_t N,
                      bool from_logits, float epsilon, const float* weights, float* losses,
                      float* grad, float grad_scale);

}  // namespace fastckpt
