#include "kernels/dropout.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/fpmode.h"
#include "kernels/simd.h"
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

namespace {

// Keep bits for elements [b, e): element i uses lane (offset + i) % 4 of the Philox block at
// counter (offset + i) / 4, so any split of the range yields the same bits. Blocks are generated
// in batches (one loop over counters, which the compiler vectorizes) and all four lanes are used.
FASTCKPT_CLONES
void keep_bits(uint8_t* __restrict mask, int64_t b, int64_t e, uint64_t offset, uint64_t seed,
               uint32_t threshold) {
  constexpr int kBatch = 64;
  uint32_t r0[kBatch], r1[kBatch], r2[kBatch], r3[kBatch];
  const uint64_t first = (offset + static_cast<uint64_t>(b)) >> 2;
  const uint64_t last = (offset + static_cast<uint64_t>(e) - 1) >> 2;
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  constexpr uint64_t kLo32 = 0xffffffffu;
  for (uint64_t c0 = first; c0 <= last; c0 += kBatch) {
    const int cnt = static_cast<int>(std::min<uint64_t>(kBatch, last - c0 + 1));
    for (int j = 0; j < cnt; ++j) {
      const uint64_t ctr = c0 + static_cast<uint64_t>(j);
      // The 32-bit words held in 64-bit lanes: each Philox product is then one 32x32->64 lane
      // multiply (vpmuludq) without the even/odd shuffles 32-bit lanes need (keep_bits 1.47 ->
      // 1.14 ns per element, AVX-512, same bits).
      uint64_t x0 = ctr & kLo32, x1 = ctr >> 32, x2 = 0, x3 = 0;
      uint64_t a0 = k0, a1 = k1;
      for (int round = 0; round < 10; ++round) {
        const uint64_t p0 = uint64_t{0xD2511F53u} * (x0 & kLo32);
        const uint64_t p1 = uint64_t{0xCD9E8D57u} * (x2 & kLo32);
        const uint64_t n0 = (p1 >> 32) ^ x1 ^ a0;
        const uint64_t n2 = (p0 >> 32) ^ x3 ^ a1;
        x1 = p1 & kLo32;
        x3 = p0 & kLo32;
        x0 = n0;
        x2 = n2;
        a0 = (a0 + 0x9E3779B9u) & kLo32;
        a1 = (a1 + 0xBB67AE85u) & kLo32;
      }
      r0[j] = static_cast<uint32_t>(x0);
      r1[j] = static_cast<uint32_t>(x1);
      r2[j] = static_cast<uint32_t>(x2);
      r3[j] = static_cast<uint32_t>(x3);
    }
    // Element index of lane 0 of block c0 + j is base + 4j. Blocks wholly inside [b, e) are
    // written without per-element range checks (a loop the compiler vectorizes); only the first
    // and last block of the range can be partial.
    const int64_t base = static_cast<int64_t>(c0 * 4 - offset);
    int jlo = 0, jhi = cnt;
    while (jlo < cnt && base + 4 * jlo < b) ++jlo;
    while (jhi > jlo && base + 4 * (jhi - 1) + 3 >= e) --jhi;
    for (int j = jlo; j < jhi; ++j) {
      const int64_t i = base + 4 * j;
      mask[i] = (r0[j] >> 8) >= threshold;
      mask[i + 1] = (r1[j] >> 8) >= threshold;
      mask[i + 2] = (r2[j] >> 8) >= threshold;
      mask[i + 3] = (r3[j] >> 8) >= threshold;
    }
    const auto partial = [&](int j) {
      const uint32_t lanes[4] = {r0[j], r1[j], r2[j], r3[j]};
      for (int l = 0; l < 4; ++l) {
        const int64_t i = base + 4 * j + l;
        if (i >= b && i < e) mask[i] = (lanes[l] >> 8) >= threshold;
      }
    };
    for (int j = 0; j < jlo; ++j) partial(j);
    for (int j = jhi; j < cnt; ++j) partial(j);
  }
}

// `keep ? v : +0.f` (mask bytes are 0 or 1) as a bit mask: the compiler vectorizes it, where the
// select stays a branch that mispredicts on a random mask (measured 3-5 ns per element).
inline float masked(float v, uint8_t keep) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits &= 0u - static_cast<uint32_t>(keep);
  std::memcpy(&v, &bits, 4);
  return v;
}

FASTCKPT_CLONES
void apply_mask(const float* __restrict x, const uint8_t* __restrict mask, float* __restrict y,
                int64_t b, int64_t e, float scale) {
  for (int64_t i = b; i < e; ++i) y[i] = masked(x[i] * scale, mask[i]);
}

}  // namespace

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
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), n >> 13)));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int t = 0; t < nt; ++t) {
      const int64_t b = n * t / nt, e = n * (t + 1) / nt;
      if (b < e) {
        keep_bits(mask, b, e, offset, seed, threshold);
        apply_mask(x, mask, y, b, e, scale);
      }
    }
  }
}

void dropout_backward(const float* dy, const uint8_t* mask, float* dx, int64_t n, float rate) {
  FlushDenormals fz;
  const float scale = 1.f / (1.f - rate);
  if (dy == dx) {  // in place (the fused trainer): no aliasing question for the vectorizer
    for (int64_t i = 0; i < n; ++i) dx[i] = masked(dx[i] * scale, mask[i]);
    return;
  }
  apply_mask(dy, mask, dx, 0, n, scale);
}

}  // namespace fastckpt
