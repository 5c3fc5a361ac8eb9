// Writes a tensor bundle (TensorFlow V2 checkpoint) at a prefix, atomically.
//
// Tensor bytes go straight from the caller's buffers into the new data files (through a memory
// map of a pre-allocated temp file, or pwrite), with the CRC computed in the same pass; shards are
// written in parallel; the index is built in memory (it is small) and the whole set is published
// by the commit protocol of io/commit.h. No Python here: the binding releases the GIL around it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/file.h"
#include "io/records.h"

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

// A single-shard bundle staged in memory, for saves that must snapshot state which keeps changing
// (ModelCheckpoint during fit). stage() copies the tensors into one reused, page-aligned image of
// the data file, CRCs taken in the same pass on several threads, while the caller waits; write()
// commits that image at a prefix without reading the sources again. A durable write sends the
// image to the device with O_DIRECT (no page-cache copy, no dirty pages for fsync to flush) and
// falls back to buffered writes where the file system refuses it. Not thread-safe: one stage() or
// write() at a time (a stage() during a write() throws std::logic_error).
class StagedBundle {
 public:
  StagedBundle() = default;
  ~StagedBundle();
  StagedBundle(const StagedBundle&) = delete;
  StagedBundle& operator=(const StagedBundle&) = delete;

  // Runs fn(i) for every i in [0, n), possibly in parallel; rethrows fn's first exception.
  using ForEach = std::function<void(size_t n, const std::function<void(size_t)>& fn)>;

  // Validates like write_bundle; on failure nothing staged before survives. The copy runs on
  // `num_threads` threads of io::parallel_for, or through `for_each` when given (the Python
  // binding passes the kernels' OpenMP team).
  //
  // `prefilled` (empty, or one per tensor): a value >= 0 is the CRC-32C (unmasked) of a tensor
  // whose bytes a caller already put into the image at the place layout() gave it (fill_target);
  // such a tensor is not copied again if its place is unchanged, else it is copied as usual.
  void stage(const std::vector<TensorSource>& tensors, int num_threads, const ForEach& for_each = {},
             const std::vector<int64_t>& prefilled = {});
  // Lays `tensors` out as stage() would and sizes the image, copying nothing: the offset of each
  // tensor (caller order) in the image. Drops what was staged (staged() is false until the next
  // stage()). For a snapshot filled by someone else (the fused trainer) before stage().
  std::vector<uint64_t> layout(const std::vector<TensorSource>& tensors);
  // The image bytes [offset, offset + n) of the last layout(), for filling; throws
  // std::out_of_range outside it and std::logic_error with no layout() or a write() in flight.
  uint8_t* fill_target(uint64_t offset, uint64_t n);
  // Throws std::logic_error when nothing is staged; may be called again (same bytes, new prefix).
  // The files it replaces are unlinked at once but their blocks are freed only by the next
  // write(), release_replaced() or the destructor, off the commit's latency (io/commit.h).
  void write(const std::string& prefix, bool durable);
  // Closes the files the last write() replaced, which frees their blocks.
  void release_replaced();
  uint64_t nbytes() const { return size_; }
  bool staged() const { return staged_; }

 private:
  class InFlight;
  void reserve_image(uint64_t size);
  std::vector<std::string> keys_;    // caller order
  std::vector<BundleEntry> entries_;  // offsets into the image, masked CRCs
  std::vector<Fd> replaced_;         // unlinked files the last write() replaced, still open
  // After layout(): key -> (offset, bytes) of each tensor, for stage()'s prefilled check.
  std::unordered_map<std::string, std::pair<uint64_t, uint64_t>> fill_layout_;
  uint64_t fill_size_ = 0;
  uint8_t* image_ = nullptr;
  uint64_t capacity_ = 0, size_ = 0;
  bool staged_ = false;
  std::atomic<bool> busy_{false};
};

// --- Collective writes: one bundle written by N processes holding identical tensors ------------
// (data-parallel replicas, e.g. MPI ranks). Every process computes the same layout: shard s holds
// a contiguous run of the tensors in caller order, each tensor on the shard where its first byte
// falls when the total is cut into N equal shares. The caller supplies the messaging:
//   1. process 0 holds the directory's writer lock and calls prepare_collective (refuses
//      directories in the way, finishes an interrupted commit, removes dead temps): a token;
//   2. every process r, given the token: write_collective_shard(..., r, ...) writes shard r under
//      its temp name, durably, and returns the masked CRCs of its tensors (caller order);
//   3. process 0, once every shard is written: commit_collective with all CRCs writes the index and
//      publishes the set with the journal of io/commit.h, or abort_collective removes every temp.
// A process killed at any point leaves the previous checkpoint intact: nothing is renamed before
// the journal, which only process 0 writes after every shard is durable.

// The shard of each tensor (caller order) in the collective layout.
std::vector<int> collective_layout(const std::vector<TensorSource>& tensors, int num_shards);
std::string prepare_collective(const std::string& prefix, int num_shards);
std::vector<uint32_t> write_collective_shard(const std::string& prefix, const std::vector<TensorSource>& tensors,
                                             int num_shards, int shard, const std::string& token,
                                             bool durable, int num_threads);
// masked_crcs: one per tensor, caller order (each from the process that wrote its shard).
void commit_collective(const std::string& prefix, const std::vector<TensorSource>& tensors, int num_shards,
                       const std::string& token, const std::vector<uint32_t>& masked_crcs, bool durable);
void abort_collective(const std::string& prefix, int num_shards, const std::string& token);

// Bytes a tensor occupies in a data file (DT_STRING: varint lengths + 4-byte checksum + bytes).
uint64_t stored_size(const TensorSource& t);

}  // namespace fastckpt::io
