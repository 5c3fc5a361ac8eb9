// Optimizer updates, one fused pass over a parameter and its slots, with Keras' semantics.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastckpt {

struct AdamParams {
  float learning_rate = 0.001f;
  float beta_1 = 0.9f;
  float beta_2 = 0.999f;
  float epsilon = 1e-7f;
  bool amsgrad = false;
};

// Step `t` is 1-based (Keras: iterations + 1). vhat is used only with amsgrad (may be null otherwise).
//   m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); [vhat = max(vhat, v)]
//   var -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v or vhat) + eps)
void adam_update(float* var, const float* grad, float* m, float* v, float* vhat, int64_t n,
                 const AdamParams& p, int64_t t);

// One variable of adam_update_many (vhat used only with amsgrad).
struct AdamSlice {
  float* var;
  const float* grad;
  float* m;
  float* v;
  float* vhat;
  int64_t n;
};
// adam_update on every variable of a step, in one parallel region over all their elements (the
// threads split the concatenated elements evenly, crossing variable boundaries): one fork per
// step instead of one per large variable, and small variables no longer run on one thread.
// Every element's arithmetic is adam_update's, so the values are the same bit for bit.
void adam_update_many(const AdamSlice* vars, int count, const AdamParams& p, int64_t t);

// Keras SGD: momentum 0 -> var -= lr g; else m = mu m - lr g and var += m (nesterov:
// var += mu m - lr g). `m` may be null when momentum is 0.
void sgd_update(float* var, const float* grad, float* m, int64_t n, float learning_rate,
                float momentum, bool nesterov);

// A checkpoint snapshot taken inside an update (ModelCheckpoint's staged image, filled by the
// last step of an epoch): how to copy a block with its CRC-32C and how to join two CRCs. Passed
// in so the kernels need not link the I/O code.
struct SnapshotSink {
  // Copies n bytes src -> dst; returns `crc` extended over them.
  uint32_t (*copy_crc)(uint32_t crc, void* dst, const void* src, size_t n) = nullptr;
  // The CRC of A||B from crc(A), crc(B) and len(B).
  uint32_t (*combine)(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) = nullptr;
};

// adam_update / sgd_update that also copy each array they update (k = 0: var, 1: m, 2: v,
// 3: vhat for Adam; 0: var, 1: momentum for SGD) into dst[k] (null: not taken), in cache-sized
// blocks right after updating them, and return the (unmasked) CRC-32C of its n floats in crc[k].
// The arrays' values are the same as the plain updates'.
void adam_update_snapshot(float* var, const float* grad, float* m, float* v, float* vhat, int64_t n,
                          const AdamParams& p, int64_t t, const SnapshotSink& sink,
                          uint8_t* const dst[4], uint32_t crc[4]);
void sgd_update_snapshot(float* var, const float* grad, float* m, int64_t n, float learning_rate,
                         float momentum, bool nesterov, const SnapshotSink& sink,
                         uint8_t* const dst[4], uint32_t crc[4]);


// ---- The rest of tf_keras 2.21's optimizers. Scalars that Keras computes once per step from
// Python floats (e.g. `1 - rho`) are passed in already rounded to float32, so each element sees
// the same float32 operations, in the same order, as Keras' update_step.

// RMSprop: vel = rho vel + one_rho g^2; [centered: ag = rho ag + one_rho g; den = vel - ag^2 + eps]
// else den = vel + eps; inc = lr g / sqrt(den); momentum > 0: mom = momentum mom + inc,
// var -= mom; else var -= inc. `mom` is used only when momentum > 0, `ag` only when centered.
void rmsprop_update(float* var, const float* grad, float* vel, float* mom, float* ag, int64_t n,
                    float lr, float rho, float one_rho, float momentum, float epsilon);

// Adagrad: acc += g g; var -= lr g / sqrt(acc + eps).
void adagrad_update(float* var, const float* grad, float* acc, int64_t n, float lr, float epsilon);

// Adadelta: ag = rho ag + one_rho g g; d = -sqrt(adv + eps) g / sqrt(ag + eps);
// adv = rho adv + one_rho d d; var += lr d.
void adadelta_update(float* var, const float* grad, float* ag, float* adv, int64_t n, float lr,
                     float rho, float one_rho, float epsilon);

// Adamax: m += (g - m) one_b1; u = max(b2 u, |g|); var -= lr m / (one_b1p (u + eps)) with
// one_b1p = 1 - b1^t.
void adamax_update(float* var, const float* grad, float* m, float* u, int64_t n, float lr,
                   float one_b1, float beta_2, float one_b1p, float epsilon);

// Nadam: m += (g - m) one_b1; v += (g^2 - v) one_b2;
// mhat = u_next m / den_next + one_u g / den; vhat = v / one_b2p; var -= mhat lr / (sqrt(vhat) + eps)
// (u_next = u_{t+1}, den_next = 1 - prod_{t+1}, one_u = 1 - u_t, den = 1 - prod_t).
struct NadamParams {
  float lr, one_b1, one_b2, u_next, den_next, one_u, den, one_b2p, epsilon;
};
void nadam_update(float* var, const float* grad, float* m, float* v, int64_t n, const NadamParams& p);

// Ftrl: gs = g + shrink2 var; na = acc + g^2; lin += gs - (na^p - acc^p) / lr var;
// quad = na^p / lr + l2x2; var = (clip(lin, -l1, l1) - lin) / quad; acc = na.
// (p = -learning_rate_power, shrink2 = 2 l2_shrinkage, l2x2 = 2 (l2 + beta / (2 lr))).
struct FtrlParams {
  float lr, power, shrink2, l1, l2x2;
};
void ftrl_update(float* var, const float* grad, float* acc, float* lin, int64_t n, const FtrlParams& p);

// Lion: var -= lr sign(m b1 + g one_b1); m = m b2 + g one_b2.
void lion_update(float* var, const float* grad, float* m, int64_t n, float lr, float beta_1,
                 float one_b1, float beta_2, float one_b2);

// ---- Steps around the update rule (each only when the optimizer is configured to use it).

// Sum of squares of x, accumulated in double (a gradient's squared L2 norm).
double sum_squares(const float* x, int64_t n);

// out = x * mul / div (tf.clip_by_norm's last step; div = 1 for clip_by_global_norm).
void scale_div(const float* x, float* out, int64_t n, float mul, float div);

// out = min(max(x, lo), hi) (tf.clip_by_value).
void clip_values(const float* x, float* out, int64_t n, float lo, float hi);

// Decoupled weight decay, before the update: var -= var * wd * lr.
void decay_weights(float* var, int64_t n, float wd, float lr);

// EMA of the weights, after the update: avg = momentum avg + one_m var; then var = avg when
// `overwrite` (tf_keras' ema_overwrite_frequency step).
void ema_update(float* avg, float* var, int64_t n, float momentum, float one_m, bool overwrite);

}  // namespace fastckpt
