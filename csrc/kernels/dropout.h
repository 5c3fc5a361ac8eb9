// Inverted dropout with a counter-based RNG.
//
// Element i of a call draws its keep/drop bit from Philox4x32-10 keyed by `seed` at counter
// (offset + i) / 4, so a (seed, offset) pair fully determines the mask: runs are reproducible,
// independent of thread count, and resumable by saving two integers.
#pragma once

#include <cstdint>

namespace fastckpt {

// Philox4x32-10 block: four 32-bit outputs for a 128-bit counter and 64-bit key.
void philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key, uint32_t out[4]);

// y = x * keep / (1 - rate); mask[i] = keep (0 or 1). Uses n random draws starting at `offset`.
void dropout_forward(const float* x, float* y, uint8_t* mask, int64_t n, float rate, uint64_t seed,
                     uint64_t offset);

// dx = dy * mask / (1 - rate). dx may alias dy.
void dropout_backward(const float* dy, const uint8_t* mask, float* dx, int64_t n, float rate);

}  // namespace fastckpt
