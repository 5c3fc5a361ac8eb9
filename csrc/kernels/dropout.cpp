#include "kernels/dropout.h"

#include "kernels/fpmode.h"
#include "kernels/threading.h"

namespace fastckpt {

void philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key, uint32_t out[4]) {
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void dropout_forward(const float* x, float* y, uint8_t* mask, int64_t n, float rate, uint64_t seed,
                     uint64_t offset) {
  FlushDenormals fz;
  if (rate <= 0.f) {
    for (int64_t i = 0; i < n; ++i) { y[i] = x[i]; mask[i] = 1; }
    return;
  }
  const float scale = 1.f / (1.f - rate);
  // Keep when a 24-bit uniform integer is >= rate * 2^24.
  const uint32_t threshold = static_cast<uint32_t>(static_cast<double>(rate) * 16777216.0);
#pragma omp parallel num_threads(num_threads()) if (n >= (1 << 16))
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t ctr = offset + static_cast<uint64_t>(i);
      uint32_t r[4];
      philox4x32(ctr >> 2, 0, seed, r);
      const uint32_t u = r[ctr & 3] >> 8;
      const uint8_t keep = u >= threshold;
      mask[i] = keep;
      y[i] = keep ? x[i] * scale : 0.f;
    }
  }
}

void dropout_backward(const float* dy, const uint8_t* mask, float* dx, int64_t n, float rate) {
  FlushDenormals fz;
  const float scale = 1.f / (1.f - rate);
  for (int64_t i = 0; i < n; ++i) dx[i] = mask[i] ? dy[i] * scale : 0.f;
}

}  // namespace fastckpt
