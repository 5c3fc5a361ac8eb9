#include "io/table.h"

#include <algorithm>
#include <stdexcept>

#include "io/crc32c.h"
#include "io/error.h"
#include "io/wire.h"

namespace fastckpt::io {

using namespace format;

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

void TableBuilder::BlockBuilder::reset() {
  buf_.clear();
  last_key_.clear();
  restarts_.assign(1, 0);
  counter_ = 0;
}

void TableBuilder::BlockBuilder::add(std::string_view key, std::string_view value) {
  size_t shared = 0;
  if (counter_ < interval_) {
    const size_t n = std::min(last_key_.size(), key.size());
    while (shared < n && last_key_[shared] == key[shared]) ++shared;
  } else {
    restarts_.push_back(static_cast<uint32_t>(buf_.size()));
    counter_ = 0;
  }
  put_varint32(&buf_, static_cast<uint32_t>(shared));
  put_varint32(&buf_, static_cast<uint32_t>(key.size() - shared));
  put_varint32(&buf_, static_cast<uint32_t>(value.size()));
  buf_.append(key.data() + shared, key.size() - shared);
  buf_.append(value.data(), value.size());
  last_key_.assign(key.data(), key.size());
  ++counter_;
}

std::string_view TableBuilder::BlockBuilder::finish() {
  for (uint32_t r : restarts_) put_fixed32(&buf_, r);
  put_fixed32(&buf_, static_cast<uint32_t>(restarts_.size()));
  return buf_;
}

void shortest_separator(std::string* start, std::string_view limit) {
  const size_t n = std::min(start->size(), limit.size());
  size_t i = 0;
  while (i < n && (*start)[i] == limit[i]) ++i;
  if (i >= n) return;  // one is a prefix of the other: keep start
  const uint8_t b = static_cast<uint8_t>((*start)[i]);
  if (b < 0xff && b + 1 < static_cast<uint8_t>(limit[i])) {
    (*start)[i] = static_cast<char>(b + 1);
    start->resize(i + 1);
  }
}

void short_successor(std::string* key) {
  for (size_t i = 0; i < key->size(); ++i) {
    const uint8_t b = static_cast<uint8_t>((*key)[i]);
    if (b != 0xff) {
      (*key)[i] = static_cast<char>(b + 1);
      key->resize(i + 1);
      return;
    }
  }
}

BlockHandle TableBuilder::write_block(std::string_view contents) {
  BlockHandle h{out_.size(), contents.size()};
  out_.append(contents.data(), contents.size());
  const char type = static_cast<char>(kNoCompression);
  uint32_t crc = crc32c(contents.data(), contents.size());
  crc = crc32c_extend(crc, &type, 1);
  out_.push_back(type);
  put_fixed32(&out_, crc_mask(crc));
  return h;
}

void TableBuilder::flush_data_block() {
  if (data_.empty()) return;
  pending_handle_ = write_block(data_.finish());
  data_.reset();
  pending_index_entry_ = true;
}

static std::string encode_handle(const BlockHandle& h) {
  std::string s;
  put_varint64(&s, h.offset);
  put_varint64(&s, h.size);
  return s;
}

void TableBuilder::add(std::string_view key, std::string_view value) {
  if (has_last_key_ && !(std::string_view(last_key_) < key))
    throw std::invalid_argument("table keys must be strictly increasing");
  // TF closes the current block before an entry that alone would fill two blocks.
  if (!data_.empty() && key.size() + value.size() >= 2 * block_size_) flush_data_block();
  if (pending_index_entry_) {
    shortest_separator(&last_key_, key);
    index_.add(last_key_, encode_handle(pending_handle_));
    pending_index_entry_ = false;
  }
  data_.add(key, value);
  last_key_.assign(key.data(), key.size());
  has_last_key_ = true;
  if (data_.size_estimate() >= block_size_) flush_data_block();
}

std::string TableBuilder::finish() {
  flush_data_block();
  BlockBuilder meta(kIndexRestartInterval);
  const BlockHandle meta_handle = write_block(meta.finish());
  if (pending_index_entry_) {
    short_successor(&last_key_);
    index_.add(last_key_, encode_handle(pending_handle_));
    pending_index_entry_ = false;
  }
  const BlockHandle index_handle = write_block(index_.finish());
  std::string footer = encode_handle(meta_handle) + encode_handle(index_handle);
  footer.resize(kFooterHandlesSize, '\0');
  put_fixed64(&footer, kTableMagic);
  out_ += footer;
  return std::move(out_);
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

namespace {

// Blocks above this are CRC-checked in pieces of this size before they are loaded whole, so a
// handle that claims a huge block of a sparse file costs a streaming read, not its size in memory.
constexpr uint64_t kCrcChunk = uint64_t(1) << 20;

// Memory the reader's caller spends per entry beyond its key (BundleReader's TensorInfo with its
// shape vector and allocator overhead); used only for the expansion bound below.
constexpr uint64_t kEntryCost = 256;

struct Table {
  const TableRange& read;
  uint64_t size;
  const std::string& path;

  [[noreturn]] void fail(const std::string& what, uint64_t offset) const {
    throw FormatError(path + ": " + what + " at byte " + std::to_string(offset), path, {},
                      static_cast<int64_t>(offset));
  }

  BlockHandle decode_handle(WireReader& r, uint64_t at, const char* what) const {
    BlockHandle h;
    if (!r.varint64(&h.offset) || !r.varint64(&h.size)) fail(std::string("bad ") + what + " block handle", at);
    return h;
  }

  void check_bounds(const BlockHandle& h, uint64_t limit, const char* what) const {
    if (h.offset > limit || h.size > limit - h.offset || limit - h.offset - h.size < kBlockTrailerSize)
      fail(std::string(what) + " block handle (offset " + std::to_string(h.offset) + ", size " +
               std::to_string(h.size) + ") outside the file (blocks must end by byte " + std::to_string(limit) + ")",
           h.offset);
  }

  // Loads a block (handle already bounds-checked) into *buf and verifies its type byte and CRC.
  // Large blocks are checked in chunks first, so a bad one is refused without being held whole.
  std::string_view block(const BlockHandle& h, const char* what, std::string* buf) const {
    const uint64_t total = h.size + kBlockTrailerSize;
    if (total > kCrcChunk) {
      uint32_t crc = 0;
      for (uint64_t done = 0; done < h.size; done += kCrcChunk) {
        const uint64_t n = std::min(kCrcChunk, h.size - done);
        read(h.offset + done, static_cast<size_t>(n), buf);
        crc = crc32c_extend(crc, buf->data(), buf->size());
      }
      read(h.offset + h.size, kBlockTrailerSize, buf);
      check_trailer(h, what, crc, reinterpret_cast<const uint8_t*>(buf->data()));
      buf->clear();
      buf->shrink_to_fit();
      read(h.offset, static_cast<size_t>(h.size), buf);
      return std::string_view(*buf);
    }
    read(h.offset, static_cast<size_t>(total), buf);
    const auto* b = reinterpret_cast<const uint8_t*>(buf->data());
    check_trailer(h, what, crc32c(b, h.size), b + h.size);
    return std::string_view(buf->data(), h.size);
  }

  void check_trailer(const BlockHandle& h, const char* what, uint32_t crc, const uint8_t* trailer) const {
    const uint8_t type = trailer[0];
    if (type != kNoCompression)
      fail(std::string(what) + " block has compression type " + std::to_string(type) +
               (type == kSnappyCompression ? " (Snappy, not supported)" : " (unknown)"),
           h.offset + h.size);
    crc = crc32c_extend(crc, &type, 1);
    if (crc != crc_unmask(load_fixed32(trailer + 1))) fail(std::string(what) + " block checksum mismatch", h.offset);
  }
};

// Iterates the entries of a block. Restart points are not needed for a full scan, but their
// count must fit in the block so the entry region is well defined.
template <typename F>
void scan_block(const Table& t, std::string_view block, uint64_t block_offset, F&& fn) {
  if (block.size() < 4) t.fail("block shorter than its restart count", block_offset);
  const auto* b = reinterpret_cast<const uint8_t*>(block.data());
  const uint64_t num_restarts = load_fixed32(b + block.size() - 4);
  if (num_restarts == 0 || num_restarts > (block.size() - 4) / 4)
    t.fail("bad restart count " + std::to_string(num_restarts), block_offset + block.size() - 4);
  const size_t entries_end = block.size() - 4 - 4 * num_restarts;
  WireReader r(b, entries_end);
  std::string key;
  while (!r.done()) {
    const uint64_t at = block_offset + r.position();
    uint32_t shared, unshared, vlen;
    const uint8_t *delta, *value;
    if (!r.varint32(&shared) || !r.varint32(&unshared) || !r.varint32(&vlen))
      t.fail("bad entry header", at);
    if (shared > key.size()) t.fail("entry shares more bytes than the previous key has", at);
    if (uint64_t(shared) + unshared > kMaxKeyBytes) t.fail("key longer than the limit", at);
    if (!r.bytes(unshared, &delta)) t.fail("entry key runs past the block", at);
    const uint64_t value_at = block_offset + r.position();
    if (!r.bytes(vlen, &value)) t.fail("entry value runs past the block", at);
    key.resize(shared);
    key.append(reinterpret_cast<const char*>(delta), unshared);
    fn(std::string_view(key), std::string_view(reinterpret_cast<const char*>(value), vlen), at, value_at);
  }
}

}  // namespace

void read_table(const TableRange& read, uint64_t size, const std::string& path, const TableVisitor& fn,
                const std::function<void(size_t entries)>& before_visit) {
  Table t{read, size, path};
  // The footer first: nothing else is read from a file whose last 48 bytes are not a table footer.
  if (size < kFooterSize) t.fail("file too short for a table footer (" + std::to_string(size) + " bytes)", 0);
  const uint64_t footer_at = size - kFooterSize;
  std::string buf;
  read(footer_at, kFooterSize, &buf);
  const auto* footer = reinterpret_cast<const uint8_t*>(buf.data());
  if (load_fixed64(footer + kFooterHandlesSize) != kTableMagic) t.fail("bad table magic", size - 8);
  WireReader fr(footer, kFooterHandlesSize);
  const BlockHandle meta = t.decode_handle(fr, footer_at, "metaindex");
  const BlockHandle index = t.decode_handle(fr, footer_at, "index");
  t.check_bounds(meta, footer_at, "metaindex");
  t.check_bounds(index, footer_at, "index");
  t.block(meta, "metaindex", &buf);  // verified, contents unused (no filters in bundles)
  std::string index_buf;
  const std::string_view index_block = t.block(index, "index", &index_buf);

  // Every block handle, bounds-checked. Blocks may not overlap (nor repeat): each is then read
  // and verified once, and everything the reader does is bounded by the file's size.
  struct Span {
    BlockHandle h;
    uint64_t handle_at;  // where the handle is (for messages)
  };
  std::vector<Span> data_blocks;
  scan_block(t, index_block, index.offset, [&](std::string_view, std::string_view v, uint64_t at, uint64_t) {
    WireReader hr(v);
    const BlockHandle h = t.decode_handle(hr, at, "data");
    t.check_bounds(h, footer_at, "data");
    data_blocks.push_back({h, at});
  });
  {
    std::vector<Span> all = data_blocks;
    all.push_back({meta, footer_at});
    all.push_back({index, footer_at});
    std::sort(all.begin(), all.end(), [](const Span& a, const Span& b) { return a.h.offset < b.h.offset; });
    for (size_t i = 1; i < all.size(); ++i) {
      const BlockHandle& p = all[i - 1].h;
      const BlockHandle& c = all[i].h;
      if (c.offset < p.offset + p.size + kBlockTrailerSize) {
        const bool dup = c.offset == p.offset && c.size == p.size;
        t.fail(std::string(dup ? "duplicate" : "overlapping") + " block handles: block (offset " +
                   std::to_string(c.offset) + ", size " + std::to_string(c.size) + ") " +
                   (dup ? "is listed twice" : "overlaps the block (offset " + std::to_string(p.offset) +
                                                  ", size " + std::to_string(p.size) + ")") +
                   "; a block may be referenced once (handle in the index block)",
               std::max(all[i - 1].handle_at, all[i].handle_at));
      }
    }
  }

  // Pass 1: verify each data block once, count the entries and what materialising their keys
  // costs, check the key order and the limits, all before the visitor allocates anything.
  const uint64_t budget = kMaxIndexExpansion * size + kIndexExpansionSlack;
  size_t count = 0;
  uint64_t cost = 0;
  {
    std::string last_key;
    bool has_last = false;
    for (const Span& s : data_blocks) {
      const std::string_view blk = t.block(s.h, "data", &buf);
      scan_block(t, blk, s.h.offset, [&](std::string_view key, std::string_view, uint64_t kat, uint64_t) {
        if (++count > kMaxEntries)
          t.fail("more than " + std::to_string(kMaxEntries) + " entries (the limit)", kat);
        cost += key.size() + kEntryCost;
        if (cost > budget)
          t.fail("entries expand to more than " + std::to_string(kMaxIndexExpansion) +
                     " times the file size in memory (" + std::to_string(count) +
                     " entries so far; keys too long or too many for a " + std::to_string(size) + "-byte index)",
                 kat);
        if (has_last && !(std::string_view(last_key) < key)) t.fail("keys out of order", kat);
        last_key.assign(key.data(), key.size());
        has_last = true;
      });
    }
  }
  if (before_visit) before_visit(count);

  // Pass 2: the visitor. Blocks are read again (the file is the caller's pinned descriptor) and
  // their checksums re-checked, so the visitor sees exactly what pass 1 validated.
  for (const Span& s : data_blocks) {
    const std::string_view blk = t.block(s.h, "data", &buf);
    scan_block(t, blk, s.h.offset, [&](std::string_view key, std::string_view value, uint64_t, uint64_t vat) {
      fn(key, value, vat);
    });
  }
}

void read_table(const uint8_t* data, size_t size, const std::string& path, const TableVisitor& fn) {
  const TableRange read = [&](uint64_t offset, size_t n, std::string* out) {
    out->assign(reinterpret_cast<const char*>(data) + offset, n);  // callers stay within size
  };
  read_table(read, size, path, fn);
}

}  // namespace fastckpt::io
