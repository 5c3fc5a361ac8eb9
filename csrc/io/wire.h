// Varints, fixed-width integers and the protobuf wire format, with every read bounds-checked.
//
// Decoding never reads past `end`; a malformed or truncated input makes the reader return false
// (the caller turns that into a FormatError with its own context). Encoding appends to a string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fastckpt::io {

void put_varint64(std::string* out, uint64_t v);
inline void put_varint32(std::string* out, uint32_t v) { put_varint64(out, v); }
void put_fixed32(std::string* out, uint32_t v);
void put_fixed64(std::string* out, uint64_t v);
size_t varint_length(uint64_t v);

uint32_t load_fixed32(const uint8_t* p);  // little-endian, any alignment
uint64_t load_fixed64(const uint8_t* p);
void store_fixed32(uint8_t* p, uint32_t v);

// A cursor over [p, end). Every method checks the remaining length first.
class WireReader {
 public:
  WireReader(const uint8_t* p, size_t n) : begin_(p), p_(p), end_(p + n) {}
  explicit WireReader(std::string_view s)
      : WireReader(reinterpret_cast<const uint8_t*>(s.data()), s.size()) {}

  // At most 10 bytes; the 10th may only carry the top bit. Overlong encodings are rejected.
  bool varint64(uint64_t* v);
  // At most 5 bytes, value < 2^32.
  bool varint32(uint32_t* v);
  bool fixed32(uint32_t* v);
  bool fixed64(uint64_t* v);
  // A view of the next n bytes.
  bool bytes(uint64_t n, const uint8_t** out);
  bool skip(uint64_t n) { const uint8_t* d; return bytes(n, &d); }

  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  size_t position() const { return static_cast<size_t>(p_ - begin_); }
  bool done() const { return p_ == end_; }
  const uint8_t* cursor() const { return p_; }

  // Protobuf: reads a tag (field number >= 1, wire type 0/1/2/5); groups (3/4) are rejected.
  bool tag(uint32_t* field, uint32_t* wire_type);
  // Skips the value of a field of the given wire type.
  bool skip_field(uint32_t wire_type);
  // Reads a length-delimited value.
  bool length_delimited(std::string_view* out);

 private:
  const uint8_t* begin_;
  const uint8_t* p_;
  const uint8_t* end_;
};

// Protobuf wire types.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// Encoding helpers.
inline void put_tag(std::string* out, uint32_t field, uint32_t wire_type) {
  put_varint32(out, (field << 3) | wire_type);
}
inline void put_length_delimited(std::string* out, uint32_t field, std::string_view bytes) {
  put_tag(out, field, kLengthDelimited);
  put_varint64(out, bytes.size());
  out->append(bytes.data(), bytes.size());
}

}  // namespace fastckpt::io
