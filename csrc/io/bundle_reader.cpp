#include "io/bundle_reader.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fastckpt/format.h"
#include "io/commit.h"
#include "io/crc32c.h"
#include "io/error.h"
#include "io/table.h"
#include "io/wire.h"

namespace fastckpt::io {

using namespace format;

namespace {

// A writer that keeps replacing the prefix can make an open observe two commits; a handful of
// retries separates "changing" from "broken" without looping forever.
constexpr int kOpenAttempts = 8;

struct Retry {};  // the prefix changed while opening

}  // namespace

BundleReader::BundleReader(const std::string& prefix) : prefix_(prefix), index_path_(index_name(prefix)) {
  for (int attempt = 0; attempt < kOpenAttempts; ++attempt)
    if (try_open()) return;
  throw SystemError("checkpoint " + prefix + " kept changing while it was being opened", index_path_, EAGAIN);
}

bool BundleReader::try_open() {
  tensors_.clear();
  shards_.clear();
  header_ = BundleHeader();
  const std::optional<Journal> journal = read_journal(prefix_);
  Fd index_fd;
  try {
    index_fd = open_resolved(index_path_, journal);
  } catch (const NotFoundError&) {
    throw NotFoundError("no checkpoint at '" + prefix_ + "' (" + index_path_ + " does not exist)", index_path_);
  }
  const uint64_t size = file_size(index_fd.get(), index_path_);
  if (size > kMaxIndexBytes)
    throw FormatError(index_path_ + ": index of " + std::to_string(size) + " bytes exceeds the limit", index_path_);
  const FileId index_id = file_id(index_fd.get(), index_path_);

  // Whether the files we hold are still what the prefix resolves to (else a commit intervened).
  auto unchanged = [&]() {
    const std::optional<Journal> now = read_journal(prefix_);
    if (now.has_value() != journal.has_value() || (now && now->token != journal->token)) return false;
    const auto id = stat_resolved(index_path_, journal);
    if (!id || !(*id == index_id)) return false;
    for (const auto& sh : shards_) {
      if (!sh.fd) continue;  // not opened yet
      const auto sid = stat_resolved(sh.path, journal);
      if (!sid || !(*sid == file_id(sh.fd.get(), sh.path))) return false;
    }
    return true;
  };

  try {
    parse_index(index_fd.get(), size);
    shards_.resize(static_cast<size_t>(header_.num_shards));
    for (int64_t s = 0; s < header_.num_shards; ++s) {
      ShardFile& sh = shards_[s];
      sh.path = data_path(s);
      try {
        sh.fd = open_resolved(sh.path, journal);
      } catch (const NotFoundError&) {
        if (!unchanged()) throw Retry{};
        throw NotFoundError("missing data shard " + sh.path + " of checkpoint " + prefix_, sh.path);
      }
      sh.size = file_size(sh.fd.get(), sh.path);
    }
    for (auto& t : tensors_) check_entry(t);
  } catch (const Retry&) {
    return false;
  } catch (const FormatError&) {
    if (!unchanged()) return false;
    throw;
  }
  if (!unchanged()) return false;
  verified_.reset(new std::atomic<bool>[tensors_.size()]);
  for (size_t i = 0; i < tensors_.size(); ++i) verified_[i] = false;
  return true;
}

void BundleReader::parse_index(int fd, uint64_t size) {
  bool has_header = false;
  // Only the ranges read_table asks for are read (footer first), never the whole file at once.
  const TableRange range = [&](uint64_t offset, size_t n, std::string* out) {
    out->resize(n);
    pread_exact(fd, out->data(), n, offset, index_path_);
  };
  read_table(range, size, index_path_,
             [&](std::string_view key, std::string_view value, uint64_t at) {
               auto ctx = [&](FormatError& e) {
                 throw FormatError(index_path_ + ": " + (key.empty() ? std::string("header") : "entry '" + std::string(key) + "'") +
                                       ": " + e.what() + " (record at byte " + std::to_string(at) + ")",
                                   index_path_, std::string(key), static_cast<int64_t>(at));
               };
               if (key.empty()) {
                 try { header_ = decode_header(value); } catch (FormatError& e) { ctx(e); }
                 has_header = true;
                 return;
               }
               TensorInfo t;
               t.key.assign(key.data(), key.size());
               t.index_offset = at;
               try { t.entry = decode_entry(value); } catch (FormatError& e) { ctx(e); }
               tensors_.push_back(std::move(t));
             },
             [&](size_t entries) { tensors_.reserve(entries); });
  auto fail = [&](const std::string& what) {
    throw FormatError(index_path_ + ": " + what, index_path_, {}, 0);
  };
  if (!has_header) fail("no bundle header (empty key)");
  if (header_.num_shards < 1 || header_.num_shards > kMaxShards)
    fail("num_shards " + std::to_string(header_.num_shards) + " outside [1, " + std::to_string(kMaxShards) + "]");
  if (header_.endianness != kLittleEndian && header_.endianness != kBigEndian)
    fail("unknown endianness " + std::to_string(header_.endianness));
  if (header_.min_consumer > kConsumerVersion)
    fail("written for readers of version >= " + std::to_string(header_.min_consumer) + "; this reader is version " +
         std::to_string(kConsumerVersion));
  for (int64_t b : header_.bad_consumers)
    if (b == kConsumerVersion) fail("the file declares this reader version incompatible");
}

// Everything about an entry that can be checked without reading its data.
void BundleReader::check_entry(TensorInfo& t) const {
  const BundleEntry& e = t.entry;
  auto fail = [&](const std::string& what) {
    throw FormatError(index_path_ + ": entry '" + t.key + "': " + what + " (record at byte " +
                          std::to_string(t.index_offset) + ")",
                      index_path_, t.key, static_cast<int64_t>(t.index_offset));
  };
  if (e.has_slices) return;  // data lives in slice entries; get_tensor refuses it
  if (e.unknown_rank) fail("unknown rank");
  uint64_t numel = 1;
  for (int64_t d : e.shape) {
    if (d < 0) fail("negative dimension " + std::to_string(d));
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) || numel > (uint64_t(1) << 62))
      fail("element count overflows");
  }
  t.numel = numel;
  if (e.shard_id < 0 || e.shard_id >= header_.num_shards)
    fail("shard_id " + std::to_string(e.shard_id) + " outside [0, " + std::to_string(header_.num_shards) + ")");
  const uint64_t fsize = shards_[static_cast<size_t>(e.shard_id)].size;
  if (e.offset < 0 || e.size < 0 || static_cast<uint64_t>(e.offset) > fsize ||
      static_cast<uint64_t>(e.size) > fsize - static_cast<uint64_t>(e.offset))
    fail("bytes [" + std::to_string(e.offset) + ", +" + std::to_string(e.size) + ") outside " +
         data_path(e.shard_id) + " (" + std::to_string(fsize) + " bytes)");
  const size_t item = dtype_size(static_cast<int>(e.dtype));
  uint64_t expect;
  if (item && (__builtin_mul_overflow(numel, item, &expect) || expect != static_cast<uint64_t>(e.size)))
    fail("size " + std::to_string(e.size) + " does not match shape and dtype (" + std::to_string(numel) +
         " elements of " + std::to_string(item) + " bytes)");
  // A string element needs at least its 1-byte length; this bounds what decoding allocates.
  if (e.dtype == DT_STRING && numel > 0 && (e.size < 4 || numel > static_cast<uint64_t>(e.size) - 4))
    fail("size " + std::to_string(e.size) + " too small for " + std::to_string(numel) + " strings");
}

bool BundleReader::big_endian() const { return header_.endianness == kBigEndian; }

const TensorInfo* BundleReader::find(std::string_view key) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), key,
                             [](const TensorInfo& t, std::string_view k) { return std::string_view(t.key) < k; });
  return it != tensors_.end() && it->key == key ? &*it : nullptr;
}

std::string BundleReader::data_path(int64_t shard) const {
  return data_name(prefix_, static_cast<int>(shard), static_cast<int>(header_.num_shards));
}

std::shared_ptr<const Mapping> BundleReader::mapping_of(int64_t shard) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) throw SystemError("reader of " + prefix_ + " is closed", index_path_, EBADF);
  ShardFile& sh = shards_[static_cast<size_t>(shard)];
  if (!sh.mapping) sh.mapping = std::make_shared<const Mapping>(sh.fd.get(), sh.size, sh.path);
  return sh.mapping;
}

void BundleReader::data_error(const TensorInfo& t, const std::string& what, uint64_t off) const {
  const std::string path = data_path(t.entry.shard_id);
  throw FormatError(path + ": tensor '" + t.key + "': " + what + " (bytes at offset " + std::to_string(off) + ")",
                    path, t.key, static_cast<int64_t>(off));
}

TensorBytes BundleReader::tensor_bytes(const TensorInfo& t, int threads) {
  const BundleEntry& e = t.entry;
  if (e.has_slices)
    throw FormatError(index_path_ + ": tensor '" + t.key + "' is partitioned (slices), which is not supported",
                      index_path_, t.key, static_cast<int64_t>(t.index_offset));
  if (dtype_size(static_cast<int>(e.dtype)) == 0 && e.dtype != DT_STRING)
    throw FormatError(index_path_ + ": tensor '" + t.key + "' has unsupported dtype " + std::to_string(e.dtype),
                      index_path_, t.key, static_cast<int64_t>(t.index_offset));
  TensorBytes b;
  b.mapping = mapping_of(e.shard_id);
  b.size = static_cast<uint64_t>(e.size);
  b.data = b.size ? b.mapping->data() + e.offset : nullptr;
  std::atomic<bool>& ok = verified_[static_cast<size_t>(&t - tensors_.data())];
  if (!ok.load(std::memory_order_acquire)) {
    // Strings have their own checksum chain, checked while decoding.
    if (e.dtype != DT_STRING) {
      const uint32_t crc = crc32c_parallel(0, b.data, b.size, threads);
      if (crc != crc_unmask(e.crc32c)) data_error(t, "checksum mismatch", static_cast<uint64_t>(e.offset));
    } else {
      decode_strings(t, b);
    }
    ok.store(true, std::memory_order_release);
  }
  return b;
}

std::vector<std::string_view> BundleReader::decode_strings(const TensorInfo& t, const TensorBytes& b) const {
  const uint64_t base = static_cast<uint64_t>(t.entry.offset);
  std::vector<std::string_view> out;
  if (b.size == 0 && t.numel == 0) return out;  // TF writes 4 bytes here, but reads 0 as empty
  out.reserve(static_cast<size_t>(t.numel));  // numel <= size - 4 (check_entry)
  WireReader r(b.data, static_cast<size_t>(b.size));
  uint32_t crc = 0;
  uint64_t total = 0;
  std::vector<uint64_t> lens(static_cast<size_t>(t.numel));
  for (auto& len : lens) {
    if (!r.varint64(&len)) data_error(t, "bad string length", base + r.position());
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(len >> (8 * i));
    crc = crc32c_extend(crc, le, len <= 0xffffffffu ? 4 : 8);
    if (len > b.size || total + len > b.size) data_error(t, "string lengths exceed the tensor size", base + r.position());
    total += len;
  }
  uint32_t stored;
  const uint8_t* stored_at = r.cursor();
  if (!r.fixed32(&stored) || crc_unmask(stored) != crc)
    data_error(t, "string length checksum mismatch", base + r.position());
  crc = crc32c_extend(crc, stored_at, 4);
  if (r.remaining() != total) data_error(t, "string bytes do not fill the tensor size", base + r.position());
  for (uint64_t len : lens) {
    const uint8_t* s;
    r.bytes(len, &s);  // cannot fail: total == remaining
    crc = crc32c_extend(crc, s, static_cast<size_t>(len));
    out.emplace_back(reinterpret_cast<const char*>(s), static_cast<size_t>(len));
  }
  if (crc != crc_unmask(t.entry.crc32c)) data_error(t, "checksum mismatch", base);
  return out;
}

void BundleReader::verify(int threads) {
  for (const auto& t : tensors_) {
    if (t.entry.has_slices) continue;
    tensor_bytes(t, threads);
  }
}

void BundleReader::close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  shards_.clear();
}

void byteswap_copy(void* dst, const void* src, uint64_t n, size_t item, size_t word) {
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  const uint64_t words = n * (item / word);
  for (uint64_t i = 0; i < words; ++i, d += word, s += word)
    for (size_t k = 0; k < word; ++k) d[k] = s[word - 1 - k];
}

}  // namespace fastckpt::io
