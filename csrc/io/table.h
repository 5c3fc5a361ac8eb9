// The LevelDB-style table that stores a bundle's index (docs/format.md, "Layout").
//
// TableBuilder produces exactly the bytes TensorFlow's table builder produces for the same keys
// and values: restart interval 16 in data blocks and 1 in the index block, 256 KiB block split,
// shortest-separator index keys, an empty metaindex block, and the 48-byte footer.
//
// read_table() parses a table (from a file or from memory), verifying every block's type byte and
// CRC and bounds-checking every handle, varint and length before use.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "fastckpt/format.h"

namespace fastckpt::io {

struct BlockHandle {
  uint64_t offset = 0;
  uint64_t size = 0;  // excludes the 5-byte trailer
};

class TableBuilder {
 public:
  explicit TableBuilder(size_t block_size = format::kBlockSize) : block_size_(block_size) {}

  // Keys must be strictly increasing in unsigned byte order; std::invalid_argument otherwise.
  void add(std::string_view key, std::string_view value);

  // Closes the last block, writes metaindex, index and footer, and returns the whole table.
  std::string finish();

 private:
  class BlockBuilder {
   public:
    explicit BlockBuilder(int restart_interval) : interval_(restart_interval) { reset(); }
    void reset();
    void add(std::string_view key, std::string_view value);
    // Appends restarts and returns the finished block contents.
    std::string_view finish();
    size_t size_estimate() const { return buf_.size() + 4 * restarts_.size() + 4; }
    bool empty() const { return buf_.empty(); }

   private:
    int interval_;
    int counter_ = 0;
    std::string buf_, last_key_;
    std::basic_string<uint32_t> restarts_;
  };

  void flush_data_block();
  BlockHandle write_block(std::string_view contents);

  size_t block_size_;
  std::string out_;
  std::string last_key_;
  bool has_last_key_ = false;
  BlockBuilder data_{format::kDataRestartInterval};
  BlockBuilder index_{format::kIndexRestartInterval};
  bool pending_index_entry_ = false;
  BlockHandle pending_handle_;
};

// LevelDB's bytewise-comparator key shortening, as TF uses it for index keys.
void shortest_separator(std::string* start, std::string_view limit);
void short_successor(std::string* key);

// Calls fn(key, value, value_offset) for every entry of every data block, in order.
// value_offset is the byte offset of the value in the table (for error messages).
// Throws FormatError (with `path` and a byte offset) on anything malformed, including keys that
// are not strictly increasing, more than kMaxEntries entries or keys over kMaxKeyBytes.
//
// Work is bounded by the file's size: the footer is read and its handles checked against the size
// before anything else is read; block handles may neither overlap nor repeat (so each block is read
// and CRC-checked once per pass); a first pass counts the entries and what their keys cost once
// materialised (bounded by kMaxIndexExpansion x size) and checks the key order, all before fn is
// called, so a caller that stores entries allocates only for a table that passed. before_visit (if
// given) receives the entry count between the two passes.
using TableVisitor = std::function<void(std::string_view key, std::string_view value, uint64_t value_offset)>;
// Reads exactly n bytes at offset of the table file into *out (replacing its contents). read_table
// only asks for ranges inside [0, size).
using TableRange = std::function<void(uint64_t offset, size_t n, std::string* out)>;
void read_table(const TableRange& read, uint64_t size, const std::string& path, const TableVisitor& fn,
                const std::function<void(size_t entries)>& before_visit = {});
// The same over a table held in memory.
void read_table(const uint8_t* data, size_t size, const std::string& path, const TableVisitor& fn);

}  // namespace fastckpt::io
