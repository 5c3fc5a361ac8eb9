// Writes a tensor bundle (TensorFlow V2 checkpoint) at a prefix, atomically.
//
// Tensor bytes go straight from the caller's buffers into the new data files (through a memory
// map of a pre-allocated temp file, or pwrite), with the CRC computed in the same pass; shards are
// written in parallel; the index is built in memory (it is small) and the whole set is published
// by the commit protocol of io/commit.h. No Python here: the binding releases the GIL around it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fastckpt::io {

struct TensorSource {
  std::string key;             // non-empty, at most format::kMaxKeyBytes, unique
  int dtype = 0;               // format::DataType; fixed-size types or DT_STRING
  std::vector<int64_t> shape;  // non-negative dims, rank <= format::kMaxRank
  // Fixed-size dtypes: numel * itemsize bytes, row-major, little-endian. Must stay unchanged
  // until write_bundle returns.
  const void* data = nullptr;
  uint64_t nbytes = 0;
  // DT_STRING: exactly numel elements (views into caller-owned bytes).
  std::vector<std::string_view> strings;
};

struct WriteOptions {
  int num_shards = 1;    // 1 .. format::kMaxShards; tensors are spread over shards by bytes
  bool durable = true;   // fsync files and directory (crash safety against power loss too)
  int num_threads = 1;   // threads for shards and for large tensors
  bool use_mmap = true;  // false: pwrite
};

// Throws std::invalid_argument for bad input (before touching the file system), NotFoundError when
// the directory does not exist, SystemError for OS failures. On failure before the commit point the
// old checkpoint (if any) is untouched and no temp file is left behind.
void write_bundle(const std::string& prefix, const std::vector<TensorSource>& tensors,
                  const WriteOptions& options);

// Bytes a tensor occupies in a data file (DT_STRING: varint lengths + 4-byte checksum + bytes).
uint64_t stored_size(const TensorSource& t);

}  // namespace fastckpt::io
