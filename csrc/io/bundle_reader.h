// Reads a tensor bundle (TensorFlow V2 checkpoint): TensorFlow-written files and ours.
//
// Opening costs O(index): the .index is read and verified (footer first, then every block once,
// every record; io/table.h bounds the work and memory by the file's size), every
// entry is bounds-checked against its shard's size, and a descriptor is opened for each shard so
// the reader holds one consistent snapshot even if a writer replaces the prefix afterwards. Shards
// are memory-mapped lazily, read-only, on first access. A tensor's CRC is checked on its first
// access (and remembered); tensor views share ownership of the mapping and outlive the reader.
//
// Limits (fastckpt/format.h): index size, key length, entry count, rank, shard count. Everything
// malformed throws FormatError naming the file, the key (when known) and a byte offset.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/file.h"
#include "io/records.h"

namespace fastckpt::io {

struct TensorInfo {
  std::string key;
  BundleEntry entry;
  uint64_t numel = 0;          // product of the dims (checked against overflow)
  uint64_t index_offset = 0;   // where the entry's record sits in the .index (for messages)
};

// Verified bytes of one tensor; `mapping` keeps `data` valid.
struct TensorBytes {
  std::shared_ptr<const Mapping> mapping;
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

class BundleReader {
 public:
  explicit BundleReader(const std::string& prefix);

  const std::string& prefix() const { return prefix_; }
  const std::string& index_path() const { return index_path_; }
  const BundleHeader& header() const { return header_; }
  bool big_endian() const;
  // Tensor entries (not the header), sorted by key.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* find(std::string_view key) const;
  std::string data_path(int64_t shard) const;

  // Bounds- and CRC-checked bytes of a tensor; CRC work is split over `threads` for big tensors.
  // Throws FormatError for a CRC mismatch, unsupported dtype or sliced (partitioned) entry.
  TensorBytes tensor_bytes(const TensorInfo& t, int threads);
  // DT_STRING elements as views into `bytes` (from tensor_bytes), checking both checksums.
  std::vector<std::string_view> decode_strings(const TensorInfo& t, const TensorBytes& bytes) const;

  // Reads every tensor and checks every CRC; throws on the first bad one (index order).
  void verify(int threads);

  // Drops descriptors and mappings held by the reader (views already returned stay valid).
  void close();
  bool closed() const { return closed_; }

 private:
  struct ShardFile {
    std::string path;
    Fd fd;
    uint64_t size = 0;
    std::shared_ptr<const Mapping> mapping;  // created on first use
  };

  bool try_open();  // false: the prefix changed under us, retry
  void parse_index(int fd, uint64_t size);
  void check_entry(TensorInfo& t) const;
  std::shared_ptr<const Mapping> mapping_of(int64_t shard);
  [[noreturn]] void data_error(const TensorInfo& t, const std::string& what, uint64_t off) const;

  std::string prefix_, index_path_;
  BundleHeader header_;
  std::vector<TensorInfo> tensors_;
  std::vector<ShardFile> shards_;
  std::unique_ptr<std::atomic<bool>[]> verified_;
  std::mutex mu_;
  bool closed_ = false;
};

// Copies n elements of `item` bytes each from src to dst, reversing the bytes of every `word`
// (= item, or item/2 for complex types whose halves swap separately).
void byteswap_copy(void* dst, const void* src, uint64_t n, size_t item, size_t word);

}  // namespace fastckpt::io
