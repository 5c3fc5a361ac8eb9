// Atomic, crash-safe publication of a multi-file checkpoint (docs/format.md, "Atomic commit").
//
// A bundle is a *pair* (P.index + P.data-*), and POSIX renames one file at a time, so replacing
// both atomically needs a roll-forward journal:
//   1. the writer creates every new file under a temp name (<final>.tmp-<token>) and fsyncs it;
//   2. it atomically publishes P.fastckpt-commit (temp + fsync + rename + dir fsync), which lists
//      the final names to take over and stale files to delete: from this instant the new
//      checkpoint is decided;
//   3. it renames each temp over its final name (data shards first, index last), fsyncs the
//      directory, deletes stale shards of the old checkpoint;
//   4. it removes the journal.
// A reader that finds a journal resolves each listed name to its temp file when that still exists
// (else the final name, already renamed): before step 2 it sees the old files only, from step 2 on
// the new ones only. Existing files are only ever replaced by rename or unlinked, never truncated,
// so mappings held by other readers stay valid.
//
// One writer per prefix at a time. Writers (and recover_prefix) roll forward a journal left by a
// crashed writer and remove orphan temps; readers never modify anything.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "io/file.h"

namespace fastckpt::io {

std::string index_name(const std::string& prefix);                       // P.index
std::string data_name(const std::string& prefix, int shard, int num_shards);  // P.data-SSSSS-of-NNNNN
std::string journal_name(const std::string& prefix);                     // P.fastckpt-commit
std::string temp_name(const std::string& final_path, const std::string& token);

struct Journal {
  std::string token;                 // temp of final F is F + ".tmp-" + token
  std::vector<std::string> renames;  // final base names, in rename order
  std::vector<std::string> deletes;  // base names of stale files to remove after the renames
};

std::string encode_journal(const Journal& j);
// Validates the checksum and that every name belongs to `prefix` (a journal can never direct a
// rename or delete elsewhere). FormatError naming `path` otherwise.
Journal decode_journal(const std::string& bytes, const std::string& prefix, const std::string& path);
// nullopt when no journal exists.
std::optional<Journal> read_journal(const std::string& prefix);

// For readers: opens the file a final path currently stands for under `journal` (its temp while
// the temp exists, else the final name). NotFoundError when neither exists.
Fd open_resolved(const std::string& final_path, const std::optional<Journal>& journal);
// Identity of the file open_resolved would open now; nullopt if none.
std::optional<FileId> stat_resolved(const std::string& final_path, const std::optional<Journal>& journal);

// For the writer: steps 2-4 above. `new_finals` are the full paths of the finals whose temps
// (made with `token`) are complete. Old data shards of the prefix not among them are deleted.
// With `hold_replaced`, each replaced final is unlinked with a read-only descriptor of it kept
// there, so that its blocks are freed when the caller closes them rather than during the commit.
void commit_files(const std::string& prefix, const std::vector<std::string>& new_finals,
                  const std::string& token, bool durable, std::vector<Fd>* hold_replaced = nullptr);

// Completes an interrupted commit (if a journal is present) and removes orphan temp files of the
// prefix. Returns true if anything was changed.
bool recover_prefix(const std::string& prefix, bool durable);

// Deletes the checkpoint at `prefix` (index first, so it stops being a checkpoint at once, then
// the shards). Missing files are not an error.
void delete_prefix(const std::string& prefix, bool durable);

// Test hook: if the environment variable FASTCKPT_TEST_CRASH_AT equals `step`, the process exits
// immediately with status 86 (no cleanup, like SIGKILL). Steps: 1 data temps written, 2 all temps
// durable, 3 journal published, 4 first rename done, 5 all renames done, 6 stale files deleted,
// 7 journal removed.
void crash_point(int step);

}  // namespace fastckpt::io
