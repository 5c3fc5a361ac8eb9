#include "io/crc32c.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#define FASTCKPT_X86 1
#include <nmmintrin.h>
#endif

namespace fastckpt::io {
namespace {

constexpr uint32_t kPoly = 0x82f63b78u;

struct Tables {
  uint32_t t[8][256];
  Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

const Tables& tables() {
  static const Tables tab;  // thread-safe one-time init
  return tab;
}

// `l` is the raw register (pre-inverted); memcpy loads avoid unaligned-access UB.
uint32_t extend_portable(uint32_t l, const uint8_t* p, size_t n) {
  const auto& t = tables().t;
  while (n && (reinterpret_cast<uintptr_t>(p) & 7)) {
    l = t[0][(l ^ *p++) & 0xff] ^ (l >> 8);
    --n;
  }
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    uint32_t lo = static_cast<uint32_t>(w) ^ l, hi = static_cast<uint32_t>(w >> 32);
    l = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) l = t[0][(l ^ *p++) & 0xff] ^ (l >> 8);
  return l;
}

// GF(2) polynomial arithmetic modulo the CRC polynomial, in the reflected bit order.
uint32_t multmodp(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

struct PowTable {
  uint32_t x2n[32];  // x^(2^k) mod P
  PowTable() {
    uint32_t p = 1u << 30;  // x^1
    x2n[0] = p;
    for (int k = 1; k < 32; ++k) x2n[k] = p = multmodp(p, p);
  }
};

// x^(n * 2^k) mod P.
uint32_t x2nmodp(uint64_t n, unsigned k) {
  static const PowTable pt;
  uint32_t p = 1u << 31;  // x^0
  while (n) {
    if (n & 1) p = multmodp(pt.x2n[k & 31], p);
    n >>= 1;
    ++k;
  }
  return p;
}

#ifdef FASTCKPT_X86
// The raw CRC register advanced over `Len` zero bytes (multiplication by x^(8 Len) mod P), as
// four byte-indexed tables: what joins interleaved streams.
template <size_t Len>
struct ZeroShift {
  uint32_t t[4][256];
  ZeroShift() {
    const uint32_t x = x2nmodp(Len, 3);
    for (int k = 0; k < 4; ++k)
      for (uint32_t v = 0; v < 256; ++v) t[k][v] = multmodp(x, v << (8 * k));
  }
  uint32_t operator()(uint32_t l) const {
    return t[0][l & 0xff] ^ t[1][(l >> 8) & 0xff] ^ t[2][(l >> 16) & 0xff] ^ t[3][l >> 24];
  }
};

// Three independent streams over consecutive Len-byte thirds of a block hide the instruction's
// 3-cycle latency (one stream runs at a third of the throughput); the states are then joined.
template <size_t Len>
__attribute__((target("sse4.2"))) inline uint64_t blocks3_hw(uint64_t l, const uint8_t*& p, size_t& n) {
  static const ZeroShift<Len> shift;
  while (n >= 3 * Len) {
    uint64_t a = l, b = 0, c = 0;
    for (size_t i = 0; i < Len; i += 8) {
      uint64_t wa, wb, wc;
      std::memcpy(&wa, p + i, 8);
      std::memcpy(&wb, p + Len + i, 8);
      std::memcpy(&wc, p + 2 * Len + i, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      c = _mm_crc32_u64(c, wc);
    }
    l = shift(shift(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^ static_cast<uint32_t>(c);
    p += 3 * Len;
    n -= 3 * Len;
  }
  return l;
}

// Compiled for SSE4.2 on its own; only called after the run-time CPU check.
__attribute__((target("sse4.2"))) uint32_t extend_hw(uint32_t l, const uint8_t* p, size_t n) {
  while (n && (reinterpret_cast<uintptr_t>(p) & 7)) {
    l = _mm_crc32_u8(l, *p++);
    --n;
  }
  uint64_t l64 = l;
  l64 = blocks3_hw<4096>(l64, p, n);
  l64 = blocks3_hw<256>(l64, p, n);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    l64 = _mm_crc32_u64(l64, w);
    p += 8;
    n -= 8;
  }
  l = static_cast<uint32_t>(l64);
  while (n--) l = _mm_crc32_u8(l, *p++);
  return l;
}

bool detect_hw() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
}
#endif

bool hw_available() {
#ifdef FASTCKPT_X86
  static const bool ok = detect_hw();
  return ok;
#else
  return false;
#endif
}

uint32_t extend_raw(CrcImpl impl, uint32_t l, const uint8_t* p, size_t n) {
#ifdef FASTCKPT_X86
  if (impl != CrcImpl::kPortable && hw_available()) return extend_hw(l, p, n);
#endif
  return extend_portable(l, p, n);
}

constexpr size_t kParallelMin = size_t(4) << 20;  // below this, thread start-up dominates
constexpr size_t kCopyChunk = size_t(64) << 10;   // fits in L2 alongside the destination lines

}  // namespace

bool crc32c_hardware_available() { return hw_available(); }

uint32_t crc32c_extend_impl(CrcImpl impl, uint32_t crc, const void* data, size_t n) {
  return ~extend_raw(impl, ~crc, static_cast<const uint8_t*>(data), n);
}

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n) {
  return crc32c_extend_impl(CrcImpl::kAuto, crc, data, n);
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  return multmodp(x2nmodp(len_b, 3), crc_a) ^ crc_b;
}

uint32_t crc32c_parallel(uint32_t crc, const void* data, size_t n, int threads) {
  const auto* p = static_cast<const uint8_t*>(data);
  size_t parts = threads < 1 ? 1 : static_cast<size_t>(threads);
  parts = std::min(parts, n / (kParallelMin / 2) + 1);
  if (parts <= 1) return crc32c_extend(crc, p, n);
  const size_t step = n / parts;
  std::vector<uint32_t> part_crc(parts, 0);
  std::vector<std::thread> pool;
  pool.reserve(parts - 1);
  for (size_t i = 1; i < parts; ++i) {
    const size_t begin = i * step, len = (i + 1 == parts) ? n - begin : step;
    pool.emplace_back([&part_crc, p, i, begin, len] { part_crc[i] = crc32c(p + begin, len); });
  }
  uint32_t out = crc32c_extend(crc, p, step);
  for (auto& t : pool) t.join();
  for (size_t i = 1; i < parts; ++i) {
    const size_t len = (i + 1 == parts) ? n - i * step : step;
    out = crc32c_combine(out, part_crc[i], len);
  }
  return out;
}

uint32_t crc32c_copy(uint32_t crc, void* dst, const void* src, size_t n) {
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  while (n) {
    const size_t len = std::min(n, kCopyChunk);
    crc = crc32c_extend(crc, s, len);
    std::memcpy(d, s, len);
    d += len;
    s += len;
    n -= len;
  }
  return crc;
}

}  // namespace fastckpt::io
