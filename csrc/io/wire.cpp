#include "io/wire.h"

#include <cstring>

namespace fastckpt::io {

void put_varint64(std::string* out, uint64_t v) {
  char buf[10];
  int n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, n);
}

size_t varint_length(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Byte-by-byte assembly: independent of host endianness and alignment.
uint32_t load_fixed32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

uint64_t load_fixed64(const uint8_t* p) {
  return uint64_t(load_fixed32(p)) | (uint64_t(load_fixed32(p + 4)) << 32);
}

void store_fixed32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void put_fixed32(std::string* out, uint32_t v) {
  uint8_t b[4];
  store_fixed32(b, v);
  out->append(reinterpret_cast<const char*>(b), 4);
}

void put_fixed64(std::string* out, uint64_t v) {
  put_fixed32(out, static_cast<uint32_t>(v));
  put_fixed32(out, static_cast<uint32_t>(v >> 32));
}

bool WireReader::varint64(uint64_t* v) {
  uint64_t result = 0;
  for (int i = 0; i < 10; ++i) {
    if (p_ == end_) return false;
    const uint8_t b = *p_++;
    if (i == 9 && b > 1) return false;  // would overflow 64 bits
    result |= uint64_t(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *v = result;
      return true;
    }
  }
  return false;
}

bool WireReader::varint32(uint32_t* v) {
  uint32_t result = 0;
  for (int i = 0; i < 5; ++i) {
    if (p_ == end_) return false;
    const uint8_t b = *p_++;
    if (i == 4 && b > 0x0f) return false;
    result |= uint32_t(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *v = result;
      return true;
    }
  }
  return false;
}

bool WireReader::fixed32(uint32_t* v) {
  if (remaining() < 4) return false;
  *v = load_fixed32(p_);
  p_ += 4;
  return true;
}

bool WireReader::fixed64(uint64_t* v) {
  if (remaining() < 8) return false;
  *v = load_fixed64(p_);
  p_ += 8;
  return true;
}

bool WireReader::bytes(uint64_t n, const uint8_t** out) {
  if (n > remaining()) return false;
  *out = p_;
  p_ += n;
  return true;
}

bool WireReader::tag(uint32_t* field, uint32_t* wire_type) {
  uint32_t t;
  if (!varint32(&t)) return false;
  *field = t >> 3;
  *wire_type = t & 7;
  if (*field == 0) return false;
  return *wire_type == kVarint || *wire_type == kFixed64 || *wire_type == kLengthDelimited ||
         *wire_type == kFixed32;
}

bool WireReader::skip_field(uint32_t wire_type) {
  uint64_t v;
  switch (wire_type) {
    case kVarint: return varint64(&v);
    case kFixed64: return skip(8);
    case kFixed32: return skip(4);
    case kLengthDelimited: return varint64(&v) && skip(v);
    default: return false;
  }
}

bool WireReader::length_delimited(std::string_view* out) {
  uint64_t n;
  const uint8_t* d;
  if (!varint64(&n) || !bytes(n, &d)) return false;
  *out = std::string_view(reinterpret_cast<const char*>(d), static_cast<size_t>(n));
  return true;
}

}  // namespace fastckpt::io
