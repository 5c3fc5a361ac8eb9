// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by every checksum in a tensor
// bundle, plus the masking TensorFlow/LevelDB apply to stored CRCs.
//
// Three implementations produce identical results:
//   * hardware: the SSE4.2 `crc32` instruction, chosen at run time when the CPU has it (the
//     library is compiled for baseline x86-64, so wheels run everywhere);
//   * portable: slicing-by-8 tables;
//   * parallel: the buffer is split across threads and the partial CRCs are joined with
//     crc32c_combine (GF(2) arithmetic), for buffers of many megabytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastckpt/format.h"

namespace fastckpt::io {

enum class CrcImpl { kAuto, kHardware, kPortable };

// Continues a finished CRC `crc` (0 for "no bytes yet") over `n` more bytes. crc32c_extend(0, s, n)
// is the CRC of s; extending by A then B equals the CRC of A||B. Uses the best implementation.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);
inline uint32_t crc32c(const void* data, size_t n) { return crc32c_extend(0, data, n); }

// Same with an explicit implementation, for tests and benchmarks. kHardware falls back to portable
// code when the CPU lacks the instruction (see crc32c_hardware_available()).
uint32_t crc32c_extend_impl(CrcImpl impl, uint32_t crc, const void* data, size_t n);
bool crc32c_hardware_available();

// CRC of A||B from crc(A), crc(B) and len(B), in O(log len(B)) time.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

// Extends `crc` over `n` bytes using up to `threads` threads; small buffers stay on the caller's
// thread (threading only pays off beyond a few MiB).
uint32_t crc32c_parallel(uint32_t crc, const void* data, size_t n, int threads);

// Copies `n` bytes from src to dst and returns the CRC extended over them, in cache-sized chunks so
// each byte is read from memory once for both purposes.
uint32_t crc32c_copy(uint32_t crc, void* dst, const void* src, size_t n);

// Masked form stored in files (docs/format.md, "Layout"): rotate right 15, add a constant.
inline uint32_t crc_mask(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + format::kCrcMaskDelta;
}
inline uint32_t crc_unmask(uint32_t masked) {
  uint32_t rot = masked - format::kCrcMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace fastckpt::io
