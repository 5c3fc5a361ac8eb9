#include "io/records.h"

#include "fastckpt/format.h"
#include "io/error.h"
#include "io/wire.h"

namespace fastckpt::io {
namespace {

[[noreturn]] void bad(const char* what, const WireReader& r) {
  throw FormatError(std::string("malformed ") + what + " record at byte " +
                    std::to_string(r.position()) + " of the record");
}

// Reads a varint field value; rejects a field sent with the wrong wire type rather than guessing.
int64_t varint_field(WireReader& r, uint32_t wt, const char* what) {
  uint64_t v;
  if (wt != kVarint || !r.varint64(&v)) bad(what, r);
  return static_cast<int64_t>(v);  // two's complement, as protobuf defines int32/int64
}

// Packed or unpacked repeated varints both appear in the wild for `bad_consumers`.
void repeated_varint(WireReader& r, uint32_t wt, std::vector<int64_t>* out, const char* what) {
  if (wt == kLengthDelimited) {
    std::string_view packed;
    if (!r.length_delimited(&packed)) bad(what, r);
    WireReader pr(packed);
    while (!pr.done()) {
      uint64_t v;
      if (!pr.varint64(&v) || out->size() >= 1024) bad(what, r);
      out->push_back(static_cast<int64_t>(v));
    }
  } else {
    if (out->size() >= 1024) bad(what, r);
    out->push_back(varint_field(r, wt, what));
  }
}

void decode_version(std::string_view bytes, BundleHeader* h) {
  WireReader r(bytes);
  while (!r.done()) {
    uint32_t f, wt;
    if (!r.tag(&f, &wt)) bad("VersionDef", r);
    if (f == 1) h->producer = varint_field(r, wt, "VersionDef");
    else if (f == 2) h->min_consumer = varint_field(r, wt, "VersionDef");
    else if (f == 3) repeated_varint(r, wt, &h->bad_consumers, "VersionDef");
    else if (!r.skip_field(wt)) bad("VersionDef", r);
  }
}

void decode_dim(std::string_view bytes, BundleEntry* e) {
  WireReader r(bytes);
  int64_t size = 0;
  while (!r.done()) {
    uint32_t f, wt;
    if (!r.tag(&f, &wt)) bad("TensorShapeProto.Dim", r);
    if (f == 1) size = varint_field(r, wt, "TensorShapeProto.Dim");
    else if (!r.skip_field(wt)) bad("TensorShapeProto.Dim", r);  // name (2) is ignored
  }
  e->shape.push_back(size);
}

void decode_shape(std::string_view bytes, BundleEntry* e) {
  WireReader r(bytes);
  while (!r.done()) {
    uint32_t f, wt;
    if (!r.tag(&f, &wt)) bad("TensorShapeProto", r);
    if (f == 2) {
      std::string_view dim;
      if (wt != kLengthDelimited || !r.length_delimited(&dim)) bad("TensorShapeProto", r);
      // A dim costs at least 2 bytes, so this bound also stops a huge vector before it is built.
      if (e->shape.size() >= format::kMaxRank)
        throw FormatError("tensor rank exceeds the limit of " + std::to_string(format::kMaxRank));
      decode_dim(dim, e);
    } else if (f == 3) {
      e->unknown_rank = varint_field(r, wt, "TensorShapeProto") != 0;
    } else if (!r.skip_field(wt)) {
      bad("TensorShapeProto", r);
    }
  }
}

}  // namespace

std::string encode_header(const BundleHeader& h) {
  std::string out, version;
  if (h.producer) { put_tag(&version, 1, kVarint); put_varint64(&version, static_cast<uint64_t>(h.producer)); }
  if (h.min_consumer) { put_tag(&version, 2, kVarint); put_varint64(&version, static_cast<uint64_t>(h.min_consumer)); }
  for (int64_t b : h.bad_consumers) { put_tag(&version, 3, kVarint); put_varint64(&version, static_cast<uint64_t>(b)); }
  if (h.num_shards) { put_tag(&out, 1, kVarint); put_varint64(&out, static_cast<uint64_t>(h.num_shards)); }
  if (h.endianness) { put_tag(&out, 2, kVarint); put_varint64(&out, static_cast<uint64_t>(h.endianness)); }
  put_length_delimited(&out, 3, version);
  return out;
}

BundleHeader decode_header(std::string_view bytes) {
  BundleHeader h;
  WireReader r(bytes);
  while (!r.done()) {
    uint32_t f, wt;
    if (!r.tag(&f, &wt)) bad("BundleHeaderProto", r);
    if (f == 1) h.num_shards = varint_field(r, wt, "BundleHeaderProto");
    else if (f == 2) h.endianness = varint_field(r, wt, "BundleHeaderProto");
    else if (f == 3) {
      std::string_view v;
      if (wt != kLengthDelimited || !r.length_delimited(&v)) bad("BundleHeaderProto", r);
      decode_version(v, &h);
    } else if (!r.skip_field(wt)) {
      bad("BundleHeaderProto", r);
    }
  }
  return h;
}

std::string encode_entry(const BundleEntry& e) {
  std::string out, shape;
  for (int64_t d : e.shape) {
    std::string dim;
    if (d) { put_tag(&dim, 1, kVarint); put_varint64(&dim, static_cast<uint64_t>(d)); }
    put_length_delimited(&shape, 2, dim);
  }
  if (e.dtype) { put_tag(&out, 1, kVarint); put_varint64(&out, static_cast<uint64_t>(e.dtype)); }
  put_length_delimited(&out, 2, shape);
  if (e.shard_id) { put_tag(&out, 3, kVarint); put_varint64(&out, static_cast<uint64_t>(e.shard_id)); }
  if (e.offset) { put_tag(&out, 4, kVarint); put_varint64(&out, static_cast<uint64_t>(e.offset)); }
  if (e.size) { put_tag(&out, 5, kVarint); put_varint64(&out, static_cast<uint64_t>(e.size)); }
  // proto3 omits a zero fixed32 too; TF does the same for the (1 in 2^32) masked CRC of 0.
  if (e.crc32c) { put_tag(&out, 6, kFixed32); put_fixed32(&out, e.crc32c); }
  return out;
}

BundleEntry decode_entry(std::string_view bytes) {
  BundleEntry e;
  WireReader r(bytes);
  bool has_shape = false;
  while (!r.done()) {
    uint32_t f, wt;
    if (!r.tag(&f, &wt)) bad("BundleEntryProto", r);
    switch (f) {
      case 1: e.dtype = varint_field(r, wt, "BundleEntryProto"); break;
      case 2: {
        std::string_view v;
        if (wt != kLengthDelimited || !r.length_delimited(&v)) bad("BundleEntryProto", r);
        // A repeated message field merges; TF never repeats it, and merging dims is ambiguous.
        if (has_shape) bad("BundleEntryProto (repeated shape)", r);
        has_shape = true;
        decode_shape(v, &e);
        break;
      }
      case 3: e.shard_id = varint_field(r, wt, "BundleEntryProto"); break;
      case 4: e.offset = varint_field(r, wt, "BundleEntryProto"); break;
      case 5: e.size = varint_field(r, wt, "BundleEntryProto"); break;
      case 6:
        if (wt != kFixed32 || !r.fixed32(&e.crc32c)) bad("BundleEntryProto", r);
        break;
      case 7:
        e.has_slices = true;
        if (!r.skip_field(wt)) bad("BundleEntryProto", r);
        break;
      default:
        if (!r.skip_field(wt)) bad("BundleEntryProto", r);
    }
  }
  return e;
}

}  // namespace fastckpt::io
