#include "io/bundle_writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <atomic>
#include <thread>
#include <exception>
#include <cstdlib>
#include <new>

#include "fastckpt/format.h"
#include "io/commit.h"
#include "io/crc32c.h"
#include "io/error.h"
#include "io/file.h"
#include "io/parallel.h"
#include "io/records.h"
#include "io/table.h"
#include "io/wire.h"
#include "kernels/threading.h"

namespace fastckpt::io {

using namespace format;

namespace {

constexpr size_t kSplitMin = size_t(8) << 20;  // tensors above this are copied by several threads
constexpr uint64_t kImageAlign = 4096;            // O_DIRECT alignment (buffer, offset, length)
constexpr uint64_t kDirectMin = 64 << 10;         // smaller images: one buffered write is cheaper
constexpr uint64_t kPiece = 256 << 10;            // staging copy + CRC work unit

uint64_t checked_numel(const TensorSource& t) {
  uint64_t n = 1;
  for (int64_t d : t.shape) {
    if (d < 0) throw std::invalid_argument("tensor '" + t.key + "': negative dimension");
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n) || n > (uint64_t(1) << 62))
      throw std::invalid_argument("tensor '" + t.key + "': element count overflows");
  }
  return n;
}

void validate_prefix(const std::string& prefix) {
  const std::string base = basename_of(prefix);
  if (base.empty() || base.find_first_of("\t\n") != std::string::npos || prefix.find('\0') != std::string::npos)
    throw std::invalid_argument("invalid checkpoint prefix '" + prefix + "'");
}

void validate_tensors(const std::vector<TensorSource>& tensors) {
  if (tensors.size() + 1 > kMaxEntries) throw std::invalid_argument("too many tensors");
  std::vector<std::string_view> keys;
  keys.reserve(tensors.size());
  for (const auto& t : tensors) {
    if (t.key.empty() || t.key.size() > kMaxKeyBytes)
      throw std::invalid_argument("tensor keys must be non-empty and at most " + std::to_string(kMaxKeyBytes) + " bytes");
    if (t.shape.size() > kMaxRank) throw std::invalid_argument("tensor '" + t.key + "': rank above the limit");
    const uint64_t numel = checked_numel(t);
    if (t.dtype == DT_STRING) {
      if (t.strings.size() != numel)
        throw std::invalid_argument("tensor '" + t.key + "': " + std::to_string(t.strings.size()) +
                                    " strings for " + std::to_string(numel) + " elements");
    } else {
      const size_t item = dtype_size(t.dtype);
      if (item == 0) throw std::invalid_argument("tensor '" + t.key + "': unsupported dtype " + std::to_string(t.dtype));
      if (t.nbytes / item != numel || t.nbytes % item != 0 || (t.nbytes && !t.data))
        throw std::invalid_argument("tensor '" + t.key + "': buffer of " + std::to_string(t.nbytes) +
                                    " bytes does not hold " + std::to_string(numel) + " elements");
    }
    keys.push_back(t.key);
  }
  std::sort(keys.begin(), keys.end());
  for (size_t i = 1; i < keys.size(); ++i)
    if (keys[i] == keys[i - 1]) throw std::invalid_argument("duplicate tensor key '" + std::string(keys[i]) + "'");
}

// Where bytes go: a writable mapping, or pwrite (with small pieces coalesced).
class Sink {
 public:
  Sink(int fd, const std::string& path, uint8_t* map) : fd_(fd), path_(path), map_(map) {}
  ~Sink() = default;

  void put(const void* p, size_t n, uint64_t off) {
    if (!n) return;
    if (map_) {
      std::memcpy(map_ + off, p, n);
      return;
    }
    if (!buf_.empty() && buf_off_ + buf_.size() != off) flush();
    if (n >= kBuffer) {
      flush();
      pwrite_all(fd_, p, n, off, path_);
      return;
    }
    if (buf_.empty()) buf_off_ = off;
    buf_.append(static_cast<const char*>(p), n);
    if (buf_.size() >= kBuffer) flush();
  }

  // Copies n bytes to `off`, returning crc extended over them; large copies use several threads.
  uint32_t put_crc(uint32_t crc, const void* src, size_t n, uint64_t off, int threads) {
    const auto* s = static_cast<const uint8_t*>(src);
    if (!map_) return write_crc(crc, s, n, off, threads);
    if (threads <= 1 || n < kSplitMin) return crc32c_copy(crc, map_ + off, s, n);
    const size_t parts = static_cast<size_t>(threads), step = n / parts;
    std::vector<uint32_t> part_crc(parts);
    parallel_for(parts, threads, [&](size_t i) {
      const size_t b = i * step, len = i + 1 == parts ? n - b : step;
      part_crc[i] = crc32c_copy(0, map_ + off + b, s + b, len);
    });
    for (size_t i = 0; i < parts; ++i) crc = crc32c_combine(crc, part_crc[i], i + 1 == parts ? n - i * step : step);
    return crc;
  }

  void flush() {
    if (!buf_.empty()) pwrite_all(fd_, buf_.data(), buf_.size(), buf_off_, path_);
    buf_.clear();
  }

 private:
  // pwrite straight from the caller's buffer in chunks, the CRC of each chunk taken while it is
  // still in cache. With a second thread the CRCs run beside the writes, so a large tensor costs
  // what the write alone costs (a buffered write is a copy into the page cache; a fresh mapping
  // would add a page fault and a zero-fill per 4 KiB, measured about 2x slower).
  uint32_t write_crc(uint32_t crc, const uint8_t* s, size_t n, uint64_t off, int threads) {
    if (n < kBuffer) {
      crc = crc32c_extend(crc, s, n);
      put(s, n, off);
      return crc;
    }
    flush();
    const size_t chunks = (n + kChunk - 1) / kChunk;
    if (threads <= 1) {
      for (size_t c = 0; c < chunks; ++c) {
        const size_t b = c * kChunk, len = std::min(kChunk, n - b);
        crc = crc32c_extend(crc, s + b, len);
        pwrite_all(fd_, s + b, len, off + b, path_);
      }
      return crc;
    }
    std::vector<uint32_t> part(chunks);
    std::exception_ptr crc_error;
    // The CRC thread stays at most kLead chunks ahead of the writer, so the chunk it pulls from
    // memory is still in the shared cache when the write copies it: one pass over DRAM, not two.
    std::atomic<size_t> written{0};
    std::atomic<bool> stop{false};
    std::thread crc_thread([&] {
      try {
        for (size_t c = 0; c < chunks; ++c) {
          while (c > written.load(std::memory_order_acquire) + kLead && !stop.load())
            std::this_thread::yield();
          part[c] = crc32c_extend(0, s + c * kChunk, std::min(kChunk, n - c * kChunk));
        }
      } catch (...) {
        crc_error = std::current_exception();
      }
    });
    std::exception_ptr write_error;
    try {
      for (size_t c = 0; c < chunks; ++c) {
        const size_t b = c * kChunk;
        pwrite_all(fd_, s + b, std::min(kChunk, n - b), off + b, path_);
        written.store(c + 1, std::memory_order_release);
      }
    } catch (...) {
      write_error = std::current_exception();
    }
    stop.store(true);
    crc_thread.join();
    if (write_error) std::rethrow_exception(write_error);
    if (crc_error) std::rethrow_exception(crc_error);
    for (size_t c = 0; c < chunks; ++c)
      crc = crc32c_combine(crc, part[c], std::min(kChunk, n - c * kChunk));
    return crc;
  }

  static constexpr size_t kChunk = size_t(1) << 20;
  static constexpr size_t kLead = 2;
  static constexpr size_t kBuffer = size_t(1) << 20;
  int fd_;
  const std::string& path_;
  uint8_t* map_;
  std::string buf_;
  uint64_t buf_off_ = 0;
};

// DT_STRING layout and checksums (docs/format.md, "Layout"): lengths are checksummed as uint32 LE (uint64
// when they do not fit), the masked length checksum is stored, the entry CRC continues over it and
// then over the string bytes.
uint32_t write_strings(Sink& sink, const TensorSource& t, uint64_t off) {
  std::string head;
  uint32_t crc = 0;
  for (std::string_view s : t.strings) {
    put_varint64(&head, s.size());
    uint8_t le[8];
    const uint64_t len = s.size();
    for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(len >> (8 * i));
    crc = crc32c_extend(crc, le, len <= 0xffffffffu ? 4 : 8);
  }
  put_fixed32(&head, crc_mask(crc));
  crc = crc32c_extend(crc, head.data() + head.size() - 4, 4);
  sink.put(head.data(), head.size(), off);
  off += head.size();
  for (std::string_view s : t.strings) {
    crc = crc32c_extend(crc, s.data(), s.size());
    sink.put(s.data(), s.size(), off);
    off += s.size();
  }
  return crc;
}

struct Shard {
  std::string final_path, temp_path;
  uint64_t size = 0;
  std::vector<size_t> tensors;  // indices in caller order
};

// num_shards shards of the bundle at prefix, named for the commit with `token`.
std::vector<Shard> make_shards(const std::string& prefix, const std::string& token, int num_shards) {
  std::vector<Shard> shards(num_shards);
  for (int s = 0; s < num_shards; ++s) {
    shards[s].final_path = data_name(prefix, s, num_shards);
    shards[s].temp_path = temp_name(shards[s].final_path, token);
  }
  return shards;
}

// Entries (dtype, shape, shard, offset, size) for tensors placed on shards by shard_of: a shard's
// data follows the caller's order. Fills in each shard's size and tensor list.
std::vector<BundleEntry> lay_out(const std::vector<TensorSource>& tensors, const std::vector<uint64_t>& sizes,
                                 const std::vector<int>& shard_of, std::vector<Shard>& shards) {
  std::vector<BundleEntry> entries(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    Shard& sh = shards[shard_of[i]];
    BundleEntry& e = entries[i];
    e.dtype = tensors[i].dtype;
    e.shape = tensors[i].shape;
    e.shard_id = shard_of[i];
    e.offset = static_cast<int64_t>(sh.size);
    e.size = static_cast<int64_t>(sizes[i]);
    sh.size += sizes[i];
    sh.tensors.push_back(i);
  }
  return entries;
}

// Finishes any interrupted commit of the prefix, runs write_data (which writes every shard under
// its temp name and sets the entries' masked CRCs), writes the index and commits the set
// (io/commit.h). Temp files are removed if this fails before the commit is decided. keys[i]
// names entries[i]. hold_replaced: as for commit_files.
template <typename WriteData>
void commit_bundle(const std::string& prefix, const std::string& token, const std::vector<Shard>& shards,
                   WriteData&& write_data, const std::vector<std::string_view>& keys,
                   const std::vector<BundleEntry>& entries, bool durable,
                   std::vector<Fd>* hold_replaced = nullptr, bool prepared = false) {
  std::vector<std::string> finals;
  for (const auto& sh : shards) finals.push_back(sh.final_path);
  if (!prepared) {  // a collective commit did both before other processes wrote their temps
    refuse_directories(prefix, finals);  // before anything is written
    recover_prefix(prefix, durable);
  }
  const std::string index_final = index_name(prefix), index_temp = temp_name(index_final, token);
  const auto remove_temps = [&] {
    for (const auto& sh : shards) ::unlink(sh.temp_path.c_str());
    ::unlink(index_temp.c_str());
  };
  try {
    write_data();
    crash_point(1);
    std::vector<size_t> by_key(keys.size());
    std::iota(by_key.begin(), by_key.end(), size_t(0));
    std::sort(by_key.begin(), by_key.end(), [&](size_t a, size_t b) { return keys[a] < keys[b]; });
    TableBuilder table;
    BundleHeader header;
    header.num_shards = static_cast<int>(shards.size());
    header.producer = kProducerVersion;
    table.add(kHeaderKey, encode_header(header));
    for (size_t i : by_key) table.add(keys[i], encode_entry(entries[i]));
    const std::string index = table.finish();
    Fd fd = create_new(index_temp);
    pwrite_all(fd.get(), index.data(), index.size(), 0, index_temp);
    if (durable) fsync_fd(fd.get(), index_temp);
  } catch (...) {
    remove_temps();
    throw;
  }
  finals.push_back(index_final);  // index last: a journal-unaware reader then sees it only at the end
  try {
    commit_files(prefix, finals, token, durable, hold_replaced);
  } catch (...) {
    // Once the journal exists the commit is decided and will be rolled forward; before, undo.
    if (!path_exists(journal_name(prefix))) remove_temps();
    throw;
  }
}

void write_shard(const Shard& sh, const std::vector<TensorSource>& tensors, const std::vector<BundleEntry>& entries,
                 std::vector<uint32_t>& crcs, const WriteOptions& o, int threads) {
  Fd fd = create_new(sh.temp_path);
  uint8_t* map = nullptr;
  if (sh.size > 0 && o.use_mmap) {
    // Reserve the blocks first: a store into a mapped hole on a full disk is SIGBUS, not an error.
    const int err = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(sh.size));
    if (err == 0) {
      void* p = ::mmap(nullptr, sh.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
      if (p != MAP_FAILED) map = static_cast<uint8_t*>(p);
    } else if (err != EOPNOTSUPP && err != EINVAL) {
      errno = err;
      throw_errno("cannot allocate", sh.temp_path);
    }
  }
  struct Unmap {
    uint8_t* p;
    uint64_t n;
    ~Unmap() { if (p) ::munmap(p, n); }
  } unmap{map, sh.size};
  Sink sink(fd.get(), sh.temp_path, map);
  for (size_t i : sh.tensors) {
    const auto& t = tensors[i];
    const uint64_t off = static_cast<uint64_t>(entries[i].offset);
    crcs[i] = t.dtype == DT_STRING ? write_strings(sink, t, off)
                                   : sink.put_crc(0, t.data, t.nbytes, off, threads);
  }
  sink.flush();
  if (map) {
    unmap.p = nullptr;
    if (::munmap(map, sh.size) != 0) throw_errno("cannot unmap", sh.temp_path);
  } else if (sh.size > 0 && file_size(fd.get(), sh.temp_path) != sh.size) {
    throw SystemError("short write: " + sh.temp_path, sh.temp_path, EIO);
  }
  if (o.durable) fsync_fd(fd.get(), sh.temp_path);  // also flushes the pages dirtied via the map
}

// Writes `size` bytes of a page-aligned image to a new file. Durable writes go through O_DIRECT
// for the whole pages (the tail, and any file system that refuses O_DIRECT, through the page cache).
// (Padding the tail to a whole page and cutting the file to size after was slower: ext4 reads the
// last block back from the device to zero the part beyond the new size.)
void write_image(const std::string& path, const uint8_t* image, uint64_t size, bool durable) {
  Fd fd = create_new(path);
  uint64_t done = 0;
  const uint64_t whole = size & ~(kImageAlign - 1);
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (durable && whole >= kDirectMin && flags >= 0 && ::fcntl(fd.get(), F_SETFL, flags | O_DIRECT) == 0) {
    while (done < whole) {
      const size_t len = static_cast<size_t>(std::min<uint64_t>(whole - done, uint64_t(1) << 30));
      ssize_t w;
      {
        fastckpt::BlockingSection waits;  // DMA from the image: the writer only waits
        w = ::pwrite(fd.get(), image + done, len, static_cast<off_t>(done));
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EINVAL && done == 0) break;  // alignment the file system will not take
      if (w < 0) throw_errno("cannot write", path);
      if (w == 0) throw SystemError("no progress writing " + path, path, EIO);
      done += static_cast<uint64_t>(w);
      if (done % kImageAlign) break;  // a short, unaligned write: finish through the page cache
    }
    if (::fcntl(fd.get(), F_SETFL, flags) != 0) throw_errno("cannot clear O_DIRECT on", path);
  }
  pwrite_all(fd.get(), image + done, static_cast<size_t>(size - done), done, path);
  if (durable) fsync_fd(fd.get(), path);
}

}  // namespace

StagedBundle::~StagedBundle() { std::free(image_); }

// Marks a StagedBundle call in flight for its duration; a second, overlapping call throws.
class StagedBundle::InFlight {
 public:
  InFlight(std::atomic<bool>& busy, const char* what) : busy_(busy) {
    if (busy_.exchange(true)) throw std::logic_error(std::string("StagedBundle: ") + what + " while another call is in flight");
  }
  ~InFlight() { busy_ = false; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<bool>& busy_;
};

std::vector<uint64_t> StagedBundle::layout(const std::vector<TensorSource>& tensors) {
  InFlight in_flight(busy_, "layout()");
  staged_ = false;
  fill_layout_.clear();
  fill_size_ = 0;
  validate_tensors(tensors);
  const size_t n = tensors.size();
  std::vector<uint64_t> sizes(n);
  for (size_t i = 0; i < n; ++i) sizes[i] = stored_size(tensors[i]);
  std::vector<Shard> one(1);
  const std::vector<BundleEntry> entries = lay_out(tensors, sizes, std::vector<int>(n, 0), one);
  reserve_image(one[0].size);
  std::vector<uint64_t> offsets(n);
  for (size_t i = 0; i < n; ++i) {
    offsets[i] = static_cast<uint64_t>(entries[i].offset);
    fill_layout_[tensors[i].key] = {offsets[i], sizes[i]};
  }
  fill_size_ = one[0].size;
  return offsets;
}

uint8_t* StagedBundle::fill_target(uint64_t offset, uint64_t n) {
  if (busy_.load()) throw std::logic_error("StagedBundle: fill_target() while another call is in flight");
  if (fill_layout_.empty()) throw std::logic_error("StagedBundle: fill_target() without layout()");
  if (offset > fill_size_ || n > fill_size_ - offset)
    throw std::out_of_range("StagedBundle: bytes [" + std::to_string(offset) + ", +" + std::to_string(n) +
                            ") outside the laid-out image of " + std::to_string(fill_size_) + " bytes");
  return image_ + offset;
}

void StagedBundle::reserve_image(uint64_t size) {
  const uint64_t need = std::max<uint64_t>(kImageAlign, (size + kImageAlign - 1) & ~(kImageAlign - 1));
  if (need > capacity_) {
    void* p = nullptr;
    if (::posix_memalign(&p, kImageAlign, static_cast<size_t>(need)) != 0) throw std::bad_alloc();
    std::free(image_);
    image_ = static_cast<uint8_t*>(p);
    capacity_ = need;
    fill_layout_.clear();  // whatever was filled is gone with the old image
  }
}

void StagedBundle::stage(const std::vector<TensorSource>& tensors, int num_threads, const ForEach& for_each,
                         const std::vector<int64_t>& prefilled) {
  InFlight in_flight(busy_, "stage()");
  staged_ = false;
  validate_tensors(tensors);
  const size_t n = tensors.size();
  if (!prefilled.empty() && prefilled.size() != n)
    throw std::invalid_argument("StagedBundle: " + std::to_string(prefilled.size()) + " prefilled entries for " +
                                std::to_string(n) + " tensors");
  std::vector<uint64_t> sizes(n);
  for (size_t i = 0; i < n; ++i) sizes[i] = stored_size(tensors[i]);
  std::vector<Shard> one(1);
  std::vector<BundleEntry> entries = lay_out(tensors, sizes, std::vector<int>(n, 0), one);
  const uint64_t size = one[0].size;
  reserve_image(size);
  // A prefilled tensor counts only where layout() put it, with the same byte count, in this image.
  std::vector<bool> skip(n, false);
  std::vector<uint32_t> given(n, 0);
  if (!prefilled.empty()) {
    for (size_t i = 0; i < n; ++i) {
      if (prefilled[i] < 0 || prefilled[i] > 0xffffffffll || tensors[i].dtype == DT_STRING) continue;
      const auto it = fill_layout_.find(tensors[i].key);
      if (it == fill_layout_.end() || it->second.first != static_cast<uint64_t>(entries[i].offset) ||
          it->second.second != sizes[i])
        continue;
      skip[i] = true;
      given[i] = static_cast<uint32_t>(prefilled[i]);
    }
  }
  fill_layout_.clear();
  fill_size_ = 0;
  // Pieces of at most kPiece bytes, copied with their CRC on any thread, joined per tensor after.
  struct Piece {
    size_t tensor;
    uint64_t begin, len;
    uint32_t crc;
  };
  std::vector<Piece> pieces;
  for (size_t i = 0; i < n; ++i) {
    const auto& t = tensors[i];
    if (skip[i]) continue;
    if (t.dtype == DT_STRING || t.nbytes == 0) {
      pieces.push_back({i, 0, 0, 0});
      continue;
    }
    for (uint64_t b = 0; b < t.nbytes; b += kPiece) pieces.push_back({i, b, std::min<uint64_t>(kPiece, t.nbytes - b), 0});
  }
  uint8_t* image = image_;
  const auto copy_piece = [&](size_t k) {
    Piece& p = pieces[k];
    const auto& t = tensors[p.tensor];
    const uint64_t off = static_cast<uint64_t>(entries[p.tensor].offset);
    if (t.dtype == DT_STRING) {
      static const std::string no_path;
      Sink sink(-1, no_path, image);
      p.crc = write_strings(sink, t, off);
    } else if (p.len) {
      p.crc = crc32c_copy(0, image + off + p.begin, static_cast<const uint8_t*>(t.data) + p.begin, p.len);
    }
  };
  uint64_t to_copy = 0;
  for (const Piece& p : pieces) to_copy += p.len;
  if (to_copy < (uint64_t(1) << 20)) {
    // A few small tensors (the rest of a snapshot the fused trainer filled): waking a team of
    // threads costs more than copying them here.
    for (size_t k = 0; k < pieces.size(); ++k) copy_piece(k);
  } else if (for_each) {
    for_each(pieces.size(), copy_piece);
  } else {
    parallel_for(pieces.size(), std::max(1, num_threads), copy_piece);
  }
  std::vector<uint32_t> crcs(given);
  for (const Piece& p : pieces) crcs[p.tensor] = p.begin == 0 ? p.crc : crc32c_combine(crcs[p.tensor], p.crc, p.len);
  for (size_t i = 0; i < n; ++i) entries[i].crc32c = crc_mask(crcs[i]);
  keys_.resize(n);
  for (size_t i = 0; i < n; ++i) keys_[i] = tensors[i].key;
  entries_ = std::move(entries);
  size_ = size;
  staged_ = true;
}

void StagedBundle::write(const std::string& prefix, bool durable) {
  InFlight in_flight(busy_, "write()");
  if (!staged_) throw std::logic_error("StagedBundle: nothing staged");
  replaced_.clear();  // the files the previous write replaced: their blocks are freed here
  validate_prefix(prefix);
  const std::string token = random_token();
  const std::vector<Shard> shards = make_shards(prefix, token, 1);
  const std::vector<std::string_view> keys(keys_.begin(), keys_.end());
  commit_bundle(prefix, token, shards, [&] { write_image(shards[0].temp_path, image_, size_, durable); },
                keys, entries_, durable, &replaced_);
}

void StagedBundle::release_replaced() {
  InFlight in_flight(busy_, "release_replaced()");
  replaced_.clear();
}

uint64_t stored_size(const TensorSource& t) {
  if (t.dtype != DT_STRING) return t.nbytes;
  uint64_t n = 4;
  for (std::string_view s : t.strings) n += varint_length(s.size()) + s.size();
  return n;
}

void write_bundle(const std::string& prefix, const std::vector<TensorSource>& tensors, const WriteOptions& o) {
  validate_prefix(prefix);
  if (o.num_shards < 1 || o.num_shards > kMaxShards)
    throw std::invalid_argument("num_shards must be in [1, " + std::to_string(kMaxShards) + "]");
  validate_tensors(tensors);
  const size_t n = tensors.size();
  const int ns = o.num_shards;

  // Balanced bytes: largest tensors first, each to the currently lightest shard; within a shard
  // data keeps the caller's order.
  std::vector<uint64_t> sizes(n);
  for (size_t i = 0; i < n; ++i) sizes[i] = stored_size(tensors[i]);
  std::vector<int> shard_of(n, 0);
  if (ns > 1) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
    std::vector<uint64_t> load(ns, 0);
    for (size_t i : order) {
      const int s = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
      shard_of[i] = s;
      load[s] += sizes[i];
    }
  }
  const std::string token = random_token();
  std::vector<Shard> shards = make_shards(prefix, token, ns);
  std::vector<BundleEntry> entries = lay_out(tensors, sizes, shard_of, shards);
  std::vector<std::string_view> keys(n);
  for (size_t i = 0; i < n; ++i) keys[i] = tensors[i].key;
  commit_bundle(prefix, token, shards, [&] {
    std::vector<uint32_t> crcs(n, 0);
    const int outer = std::max(1, std::min(ns, o.num_threads));
    const int inner = std::max(1, o.num_threads / outer);
    parallel_for(static_cast<size_t>(ns), outer, [&](size_t s) {
      write_shard(shards[s], tensors, entries, crcs, o, inner);
    });
    for (size_t i = 0; i < n; ++i) entries[i].crc32c = crc_mask(crcs[i]);
  }, keys, entries, o.durable);
}

namespace {

bool valid_token(const std::string& token) {
  if (token.size() != 16) return false;
  for (char c : token)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

void check_collective(const std::string& prefix, int num_shards, const std::string& token) {
  validate_prefix(prefix);
  if (num_shards < 1 || num_shards > kMaxShards)
    throw std::invalid_argument("num_shards must be in [1, " + std::to_string(kMaxShards) + "]");
  if (!valid_token(token)) throw std::invalid_argument("collective write: token must be 16 lowercase hex digits");
}

}  // namespace

std::vector<int> collective_layout(const std::vector<TensorSource>& tensors, int num_shards) {
  const size_t n = tensors.size();
  uint64_t total = 0;
  for (const auto& t : tensors) total += stored_size(t);
  std::vector<int> shard_of(n, 0);
  uint64_t start = 0;
  for (size_t i = 0; i < n; ++i) {
    // The shard whose share [s*total/N, (s+1)*total/N) holds this tensor's first byte.
    const unsigned __int128 scaled = static_cast<unsigned __int128>(start) * static_cast<unsigned>(num_shards);
    shard_of[i] = total ? static_cast<int>(std::min<unsigned __int128>(scaled / total, num_shards - 1)) : 0;
    start += stored_size(tensors[i]);
  }
  return shard_of;
}

std::string prepare_collective(const std::string& prefix, int num_shards) {
  check_collective(prefix, num_shards, std::string(16, '0'));
  std::vector<std::string> finals;
  for (int s = 0; s < num_shards; ++s) finals.push_back(data_name(prefix, s, num_shards));
  refuse_directories(prefix, finals);
  recover_prefix(prefix, true);
  return random_token();
}

std::vector<uint32_t> write_collective_shard(const std::string& prefix, const std::vector<TensorSource>& tensors,
                                             int num_shards, int shard, const std::string& token,
                                             bool durable, int num_threads) {
  check_collective(prefix, num_shards, token);
  if (shard < 0 || shard >= num_shards)
    throw std::invalid_argument("shard " + std::to_string(shard) + " out of range [0, " + std::to_string(num_shards) + ")");
  validate_tensors(tensors);
  const size_t n = tensors.size();
  std::vector<uint64_t> sizes(n);
  for (size_t i = 0; i < n; ++i) sizes[i] = stored_size(tensors[i]);
  std::vector<Shard> shards = make_shards(prefix, token, num_shards);
  const std::vector<BundleEntry> entries = lay_out(tensors, sizes, collective_layout(tensors, num_shards), shards);
  std::vector<uint32_t> crcs(n, 0);
  WriteOptions o;
  o.durable = durable;
  o.use_mmap = false;
  try {
    write_shard(shards[shard], tensors, entries, crcs, o, std::max(1, num_threads));
  } catch (...) {
    ::unlink(shards[shard].temp_path.c_str());
    throw;
  }
  std::vector<uint32_t> out;
  for (size_t i : shards[shard].tensors) out.push_back(crc_mask(crcs[i]));
  return out;
}

void commit_collective(const std::string& prefix, const std::vector<TensorSource>& tensors, int num_shards,
                       const std::string& token, const std::vector<uint32_t>& masked_crcs, bool durable) {
  check_collective(prefix, num_shards, token);
  validate_tensors(tensors);
  const size_t n = tensors.size();
  if (masked_crcs.size() != n)
    throw std::invalid_argument("commit_collective: " + std::to_string(masked_crcs.size()) + " CRCs for " +
                                std::to_string(n) + " tensors");
  std::vector<uint64_t> sizes(n);
  for (size_t i = 0; i < n; ++i) sizes[i] = stored_size(tensors[i]);
  std::vector<Shard> shards = make_shards(prefix, token, num_shards);
  std::vector<BundleEntry> entries = lay_out(tensors, sizes, collective_layout(tensors, num_shards), shards);
  try {
    for (const auto& sh : shards) {  // every shard must be there, whole, before the journal
      struct stat st;
      if (::stat(sh.temp_path.c_str(), &st) != 0) throw_errno("collective commit: shard missing", sh.temp_path);
      if (static_cast<uint64_t>(st.st_size) != sh.size)
        throw SystemError("collective commit: shard " + sh.temp_path + " has " + std::to_string(st.st_size) +
                          " bytes, expected " + std::to_string(sh.size), sh.temp_path, EIO);
    }
  } catch (...) {
    abort_collective(prefix, num_shards, token);  // nothing was published: remove every temp
    throw;
  }
  for (size_t i = 0; i < n; ++i) entries[i].crc32c = masked_crcs[i];
  std::vector<std::string_view> keys(n);
  for (size_t i = 0; i < n; ++i) keys[i] = tensors[i].key;
  commit_bundle(prefix, token, shards, [] {}, keys, entries, durable, nullptr, /*prepared=*/true);
}

void abort_collective(const std::string& prefix, int num_shards, const std::string& token) {
  check_collective(prefix, num_shards, token);
  for (const auto& sh : make_shards(prefix, token, num_shards)) ::unlink(sh.temp_path.c_str());
  ::unlink(temp_name(index_name(prefix), token).c_str());
}

}  // namespace fastckpt::io
