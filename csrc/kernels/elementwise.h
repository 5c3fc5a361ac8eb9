// Elementwise, merge and noise layer math (ReLU/ELU/PReLU with parameters, softmax over any axis,
// Rescaling, Add/Subtract/Multiply/Average/Maximum/Minimum, Concatenate, GaussianNoise,
// GaussianDropout, AlphaDropout). Row-major float32; every array holds n elements unless stated.
// Backward kernels write dx; none of them keeps state between calls.
#pragma once

#include <cstdint>

namespace fastckpt {

// Keras' relu(x, negative_slope, max_value, threshold) (tf_keras backend.relu):
//   a = threshold != 0 ? (x > threshold ? x : 0) : max(x, 0); a = clip(a, 0, max_value) when
//   has_max; y = a - negative_slope * max(threshold - x, 0).
void relu_forward(const float* x, float* y, int64_t n, float negative_slope, bool has_max,
                  float max_value, float threshold);
void relu_backward(const float* x, const float* dy, float* dx, int64_t n, float negative_slope,
                   bool has_max, float max_value, float threshold);

// y = x > 0 ? x : alpha * expm1(x); dx = x > 0 ? dy : dy * alpha * exp(x).
void elu_forward(const float* x, float* y, int64_t n, float alpha);
void elu_backward(const float* x, const float* dy, float* dx, int64_t n, float alpha);

// PReLU over `batch` samples of `per` elements each; element j of a sample uses alpha[idx[j]]
// (idx encodes shared_axes; every idx[j] < alpha_size, checked by the caller).
//   y = x > 0 ? x : alpha * x.
// Backward: dx = x > 0 ? dy : alpha * dy (dx may be null); d_alpha[a] = sum over the elements
// using alpha a of dy * min(x, 0), in sample order (deterministic).
void prelu_forward(const float* x, const float* alpha, const int64_t* idx, float* y, int64_t batch,
                   int64_t per);
void prelu_backward(const float* x, const float* alpha, const int64_t* idx, const float* dy,
                    float* dx, float* d_alpha, int64_t alpha_size, int64_t batch, int64_t per);

// Softmax over the middle axis of an (outer, n, inner) block; backward from the output y.
void softmax_axis_forward(const float* x, float* y, int64_t outer, int64_t n, int64_t inner);
void softmax_axis_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t n,
                           int64_t inner);

// y = x * scale + offset (Rescaling; with offset 0 also its backward).
void scale_offset(const float* x, float* y, int64_t n, float scale, float offset);
// y = a * b, elementwise.
void multiply(const float* a, const float* b, float* y, int64_t n);

// Merge of k same-shaped inputs, each of n elements, in input order as tf.keras does.
enum class MergeOp : int { kAdd = 0, kSubtract = 1, kMultiply = 2, kAverage = 3, kMaximum = 4,
                           kMinimum = 5 };
void merge_forward(MergeOp op, const float* const* xs, int k, float* y, int64_t n);
// dxs[i] = d(sum of dy * y) / d xs[i]. Maximum / Minimum route each element's gradient to the first
// input holding the extreme value (ties as tf.maximum chains resolve them).
void merge_backward(MergeOp op, const float* const* xs, int k, const float* dy, float* const* dxs,
                    int64_t n);

// Concatenation of k inputs viewed as (outer, widths[i]) blocks into an (outer, sum widths) output,
// and the split back.
void concat_forward(const float* const* xs, const int64_t* widths, int k, int64_t outer, float* y);
void concat_backward(const float* dy, const int64_t* widths, int k, int64_t outer, float* const* dxs);

// Standard normal draws for elements [0, n) at counter positions offset.. (Philox4x32-10 keyed by
// seed, Box-Muller on each pair of lanes), so (seed, offset) determines them, for any thread count.
void normal_fill(float* out, int64_t n, uint64_t seed, uint64_t offset);
// GaussianNoise: y = x + stddev * N(0, 1).
void gaussian_noise_forward(const float* x, float* y, int64_t n, float stddev, uint64_t seed,
                            uint64_t offset);
// GaussianDropout: noise = 1 + stddev * N(0, 1) (kept for the backward: dx = dy * noise); y = x * noise.
void gaussian_dropout_forward(const float* x, float* y, float* noise, int64_t n, float stddev,
                              uint64_t seed, uint64_t offset);
// AlphaDropout as tf.keras: keep with probability 1 - rate (mask 1/0), dropped values set to
// alpha_p = -selu_alpha * selu_scale, then y = a * v + b with a = ((1 - rate)(1 + rate alpha_p^2))^-1/2,
// b = -a alpha_p rate. Backward: dx = dy * a * mask.
void alpha_dropout_forward(const float* x, float* y, uint8_t* mask, int64_t n, float rate,
                           uint64_t seed, uint64_t offset);
void alpha_dropout_backward(const float* dy, const uint8_t* mask, float* dx, int64_t n, float rate);

}  // namespace fastckpt
