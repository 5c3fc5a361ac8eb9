// The two protobuf records stored in a bundle's index (docs/format.md, "Layout"), with a minimal wire codec:
//   key ""     -> tensorflow.BundleHeaderProto
//   other keys -> tensorflow.BundleEntryProto
//
// Encoding follows TensorFlow's choices byte for byte (proto3: zero fields omitted, fields in
// number order, `shape` always present). Decoding accepts fields in any order, absent fields and
// unknown fields (skipped by wire type), and rejects malformed wire data by throwing FormatError
// (without path: the caller adds it).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fastckpt::io {

struct BundleHeader {
  int64_t num_shards = 0;
  int64_t endianness = 0;  // format::kLittleEndian / kBigEndian
  int64_t producer = 0;
  int64_t min_consumer = 0;
  std::vector<int64_t> bad_consumers;
};

struct BundleEntry {
  int64_t dtype = 0;
  std::vector<int64_t> shape;  // dims as stored; negative values are rejected by the reader
  bool unknown_rank = false;
  int64_t shard_id = 0;
  int64_t offset = 0;
  int64_t size = 0;
  uint32_t crc32c = 0;  // masked, as stored
  bool has_slices = false;  // partitioned variable: data lives in per-slice entries
};

std::string encode_header(const BundleHeader& h);
BundleHeader decode_header(std::string_view bytes);

std::string encode_entry(const BundleEntry& e);
BundleEntry decode_entry(std::string_view bytes);

}  // namespace fastckpt::io
