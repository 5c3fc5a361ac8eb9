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

// Throws SystemError with errno EISDIR, naming the path, when a directory sits under a name the
// commit of `prefix` would create, replace or delete: the index, the journal, `finals` and every
// existing data-shard name of the prefix. Writers call it before they write anything, so such a
// save fails leaving no file behind and the old checkpoint untouched.
void refuse_directories(const std::string& prefix, const std::vector<std::string>& finals);

// Completes an interrupted commit (if a journal is present) and removes orphan temp files of the
// prefix. Returns true if anything was changed.
bool recover_prefix(const std::string& prefix, bool durable);

// Deletes the checkpoint at `prefix` (index first, so it stops being a checkpoint at once, then
// the shards). Missing files are not an error.
void delete_prefix(const std::string& prefix, bool durable);

// Test hooks, called by the writer at each step of a commit. Steps: 1 data temps written, 2 all
// temps durable, 3 journal published, 4 first rename done, 5 all renames done, 6 stale files
// deleted, 7 journal removed. (Steps 4-7 are the writer's own commit; recovery of a crashed commit
// runs no hooks.) Both variables are read at every step, so a test may set them at any time.
//
// FASTCKPT_TEST_CRASH_AT=<step>: the process exits at once with status 86 (no cleanup, like
// SIGKILL).
//
// FASTCKPT_TEST_PAUSE_AT=<step>: the process pauses there, so that a soak test can aim a SIGKILL
// at a chosen instant of the commit. Contract, every time the step is reached:
//   1. it announces the pause by writing the line "FASTCKPT_PAUSED <step>\n" (the same line the
//      Python commits' hooks write: fastckpt/saving/atomic_dir.py, fastckpt/checkpoint/locking.py)
//      with one write(2), appended to the file named by FASTCKPT_TEST_PAUSE_FILE (created if
//      missing, mode 0644) when that variable is set, else to stderr (fd 2), before the pause
//      begins: once the line is visible the process is paused at that step (wait for the file's
//      content, not for it to exist: it is created an instant before the write);
//   2. it sleeps (the calling thread only; the GIL is not held) until it is killed, for at most
//      FASTCKPT_TEST_PAUSE_SECONDS seconds (a decimal number, default 60), or, when a pause file
//      is used, until that file no longer exists (checked every millisecond);
//   3. then it carries on with the commit as if nothing happened.
// The file's lines thus count the pauses reached. Unset or non-numeric values disable the hook.
void crash_point(int step);

}  // namespace fastckpt::io
