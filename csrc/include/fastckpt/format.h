// On-disk constants of the TensorFlow "tensor bundle" (V2 checkpoint) format, and the limits that
// fastckpt's reader enforces.
//
// Everything here is a fact of the format (see docs/format.md, "Layout") or
// a deliberate limit. Values that are facts must never change: files written by TensorFlow 2.x
// depend on them. Limits may be raised, but each one bounds memory or time spent on a hostile file,
// so raise them only with a test that shows the new bound is still safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastckpt::format {

// ---------------------------------------------------------------------------------------------
// File names. A checkpoint "prefix" P is not a file; it names the pair
//   P.index                        the LevelDB-style table of key -> BundleEntryProto
//   P.data-SSSSS-of-NNNNN          tensor bytes, one file per shard (5-digit, zero padded)
// plus, only while a fastckpt commit is in flight (see docs/format.md, "Atomic commit"):
//   P.fastckpt-commit              roll-forward journal listing temp -> final renames
//   <final name>.tmp-<16 hex>      temporary files, never read by TensorFlow
// ---------------------------------------------------------------------------------------------
inline constexpr const char* kIndexSuffix = ".index";
inline constexpr const char* kDataSuffix = ".data-";          // followed by "%05d-of-%05d"
inline constexpr const char* kJournalSuffix = ".fastckpt-commit";
inline constexpr const char* kTempInfix = ".tmp-";            // followed by a 16-hex-digit token
inline constexpr int kShardDigits = 5;

// ---------------------------------------------------------------------------------------------
// Table (.index) container: LevelDB table format without filter blocks.
// ---------------------------------------------------------------------------------------------

// The last 8 bytes of every table, little-endian: bytes 57 fb 80 8b 24 75 47 db.
inline constexpr uint64_t kTableMagic = 0xdb4775248b80fb57ull;

// Footer = BlockHandle(metaindex) + BlockHandle(index), zero padded to 40 bytes, then the magic.
inline constexpr size_t kFooterSize = 48;
inline constexpr size_t kFooterHandlesSize = 40;

// A BlockHandle is two varint64s (offset, size); each is at most 10 bytes.
inline constexpr size_t kMaxBlockHandleSize = 20;

// Each block is followed by 1 compression-type byte and a fixed32 masked crc32c of
// (block bytes || type byte).
inline constexpr size_t kBlockTrailerSize = 5;
inline constexpr uint8_t kNoCompression = 0;
inline constexpr uint8_t kSnappyCompression = 1;  // accepted by TF, never written: we reject it

// TensorFlow closes a data block once its size estimate reaches this (LevelDB uses 4 KiB; TF's
// bundle writer sets 256 KiB). Needed only for byte-identical output.
inline constexpr size_t kBlockSize = 262144;

// Prefix compression restarts every 16 keys in data blocks; index blocks restart on every key.
inline constexpr int kDataRestartInterval = 16;
inline constexpr int kIndexRestartInterval = 1;

// Stored CRCs are "masked": rotate right by 15, then add this constant (mod 2^32). Masking keeps
// a CRC of data that itself contains CRCs from being trivially zero.
inline constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;

// ---------------------------------------------------------------------------------------------
// Bundle records.
// ---------------------------------------------------------------------------------------------

// The header (BundleHeaderProto) is stored under the empty key, which sorts first.
inline constexpr const char* kHeaderKey = "";

// VersionDef semantics: we write producer 1, min_consumer 0; we read any file whose
// min_consumer <= kConsumerVersion and whose bad_consumers do not list kConsumerVersion.
inline constexpr int kProducerVersion = 1;
inline constexpr int kConsumerVersion = 1;

// BundleHeaderProto.endianness.
inline constexpr int kLittleEndian = 0;
inline constexpr int kBigEndian = 1;

// tensorflow.DataType values (types.proto). Only those fastckpt can store are named here; other
// values are listed by the reader but get_tensor refuses them.
enum DataType : int {
  DT_INVALID = 0,
  DT_FLOAT = 1,
  DT_DOUBLE = 2,
  DT_INT32 = 3,
  DT_UINT8 = 4,
  DT_INT16 = 5,
  DT_INT8 = 6,
  DT_STRING = 7,
  DT_COMPLEX64 = 8,
  DT_INT64 = 9,
  DT_BOOL = 10,
  DT_BFLOAT16 = 14,
  DT_UINT16 = 17,
  DT_COMPLEX128 = 18,
  DT_HALF = 19,
  DT_UINT32 = 22,
  DT_UINT64 = 23,
};

// Bytes per element of a fixed-size dtype; 0 for DT_STRING and for dtypes we do not support.
constexpr size_t dtype_size(int dtype) {
  switch (dtype) {
    case DT_INT8: case DT_UINT8: case DT_BOOL: return 1;
    case DT_INT16: case DT_UINT16: case DT_HALF: case DT_BFLOAT16: return 2;
    case DT_FLOAT: case DT_INT32: case DT_UINT32: return 4;
    case DT_DOUBLE: case DT_INT64: case DT_UINT64: case DT_COMPLEX64: return 8;
    case DT_COMPLEX128: return 16;
    default: return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Reader limits. A file beyond any of them is rejected as corrupt before memory is allocated for
// it. Each is far above what a real model produces (a 1000-layer model has ~10k keys, a ~1 MB index).
// ---------------------------------------------------------------------------------------------

// The whole .index is read into memory; this caps that allocation.
inline constexpr uint64_t kMaxIndexBytes = 1ull << 30;
// One key (TF keys are object paths such as "optimizer/_variables/8/.ATTRIBUTES/VARIABLE_VALUE").
inline constexpr size_t kMaxKeyBytes = 1u << 16;
// Table entries including the header; bounds the entry vector.
inline constexpr size_t kMaxEntries = 1u << 22;
// What an index's entries may cost in memory once read (their keys fully materialised, plus a fixed
// 256 bytes per entry), as a multiple of the .index size plus a slack. TF-written tables restart
// prefix compression every 16 keys, so their keys expand at most ~16x; a hostile table whose keys
// share 64 KiB prefixes (4 bytes per entry on disk) is refused before anything is stored.
inline constexpr uint64_t kMaxIndexExpansion = 32;
inline constexpr uint64_t kIndexExpansionSlack = uint64_t(1) << 20;
// Tensor rank; NumPy cannot represent more than 64 dimensions.
inline constexpr size_t kMaxRank = 64;
// Data shards. The name format allows 99999; every shard is opened at reader open time (to pin a
// consistent snapshot), so the cap also bounds file descriptors.
inline constexpr int64_t kMaxShards = 4096;
// The commit journal lists a few names per shard.
inline constexpr size_t kMaxJournalBytes = 1u << 20;

// ---------------------------------------------------------------------------------------------
// Inference plan (docs/format.md, "Inference plan"): the architecture the C++ runtime runs, stored
// by fastckpt as a scalar DT_STRING tensor under kPlanKey in the model's checkpoint (written by
// fastckpt/saving/inference_plan.py, parsed by csrc/runtime/plan.cpp). Grammar, one layer a line:
//
//   plan     = "fastckpt-plan" SP version NL "input" SP width NL { layer NL }   (last NL optional)
//   layer    = "dense" SP width SP activation SP key SP (key | "-")    kernel (in, units), bias
//            | "dropout" SP rate                                        identity at inference
//   activation = a name of kActivationNames (kernels/dense.h): "linear" | "relu" | "sigmoid" |
//                "tanh" | "softmax" | "relu6" | "gelu" | ...
//   width    = decimal 1 .. kMaxPlanWidth, no sign or leading zero      version = decimal
//   rate     = a decimal number in [0, 1) ("0.2", "1e-05")
//   key      = 1 or more bytes 0x21..0x7E (a bundle key: printable ASCII without spaces)
//   SP = one space; NL = a line feed (a carriage return before it is tolerated). Blank lines and
//   lines starting with "#" are ignored, so a hand-written plan for a TensorFlow checkpoint can be
//   commented.
// ---------------------------------------------------------------------------------------------
inline constexpr const char* kPlanKey = "_fastckpt/inference_plan";
inline constexpr const char* kPlanMagic = "fastckpt-plan";
// Version 3 (rank-3 and broadcasting ops: optional axis arguments, 'transpose'); writers emit the
// lowest version a plan needs, so older runtimes keep reading what they can run. Version 4:
// 'normalize_values', layernorm over non-trailing axes, gap1d with a merged mask (several ids).
inline constexpr int kPlanVersion = 4;
// Limits: a plan beyond any of them is refused before anything is allocated for it.
inline constexpr size_t kMaxPlanBytes = 1u << 20;
inline constexpr size_t kMaxPlanLineBytes = 4096;
inline constexpr size_t kMaxPlanLayers = 4096;
inline constexpr int64_t kMaxPlanWidth = int64_t(1) << 24;
// Version 2: named inputs and outputs (each at most kMaxPlanInputs), inputs to one node, and the
// floats one row takes over all node outputs (the runtime's scratch per row).
inline constexpr size_t kMaxPlanInputs = 256;
inline constexpr size_t kMaxPlanNodeInputs = 256;
inline constexpr int64_t kMaxPlanRowFloats = int64_t(1) << 26;

}  // namespace fastckpt::format
