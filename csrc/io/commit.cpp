#include "io/commit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <thread>

#include "fastckpt/format.h"
#include "io/crc32c.h"
#include "io/error.h"

namespace fastckpt::io {

using namespace format;

namespace {

constexpr const char* kJournalMagic = "fastckpt-commit v1";

bool all_digits(const std::string& s, size_t pos, size_t n) {
  if (s.size() < pos + n) return false;
  for (size_t i = pos; i < pos + n; ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// base + ".data-DDDDD-of-DDDDD"
bool is_data_name(const std::string& name, const std::string& base) {
  const std::string head = base + kDataSuffix;
  if (name.size() != head.size() + 14 || name.compare(0, head.size(), head) != 0) return false;
  const size_t p = head.size();
  return all_digits(name, p, 5) && name.compare(p + 5, 4, "-of-") == 0 && all_digits(name, p + 9, 5);
}

bool is_own_final(const std::string& name, const std::string& base) {
  return name == base + kIndexSuffix || is_data_name(name, base);
}

bool is_hex_token(const std::string& s) {
  if (s.size() != 16) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// A temp file some commit of this prefix may have created: <own final or journal>.tmp-<token>.
bool is_own_temp(const std::string& name, const std::string& base) {
  const size_t pos = name.rfind(kTempInfix);
  if (pos == std::string::npos || !is_hex_token(name.substr(pos + std::strlen(kTempInfix)))) return false;
  const std::string stem = name.substr(0, pos);
  return is_own_final(stem, base) || stem == base + kJournalSuffix;
}

std::string crc_hex(const std::string& s) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", crc32c(s.data(), s.size()));
  return buf;
}

// The name an old final is moved to just before its replacement takes its place: a temp name with
// a token other than the journal's, so readers never take it for the new file and writers' orphan
// cleanup removes it if we stop before deleting it.
std::string aside_token(const std::string& token) {
  std::string t = token.substr(8) + token.substr(0, 8);
  if (t == token) t[0] = t[0] == '0' ? '1' : '0';
  return t;
}

void roll_forward(const std::string& prefix, const Journal& j, bool durable, bool hooks,
                  std::vector<Fd>* hold_replaced = nullptr) {
  const std::string dir = dirname_of(prefix);
  const std::string aside = aside_token(j.token);
  std::vector<std::string> moved_aside;
  bool first = true;
  for (const auto& name : j.renames) {
    const std::string final_path = join_path(dir, name);
    const std::string tmp = temp_name(final_path, j.token);
    if (path_exists(tmp)) {
      // Move the old file aside first instead of renaming over it: ext4 (auto_da_alloc) flushes
      // a file renamed over another one synchronously, which cost 4 ms per data file per save.
      // In between, the journal sends readers to the temp, so they still see only the new files.
      if (path_exists(final_path)) {
        const std::string old = temp_name(final_path, aside);
        rename_file(final_path, old);
        moved_aside.push_back(old);
      }
      rename_file(tmp, final_path);
      if (hooks && first) crash_point(4);
      first = false;
    }
  }
  if (hooks) crash_point(5);
  if (durable) fsync_dir(dir);  // renames durable before the journal that implies them goes
  for (const auto& old : moved_aside) {
    // Held open, the replaced file loses its name now and its blocks later, when the caller
    // closes it: freeing them (a synchronous discard on some mounts, ~1 ms per 5 MB here) then
    // stays out of the commit's latency.
    Fd held = hold_replaced ? try_open_read(old) : Fd();
    remove_file(old);
    if (held) hold_replaced->push_back(std::move(held));
  }
  for (const auto& name : j.deletes) remove_file(join_path(dir, name));
  if (hooks) crash_point(6);
  // No fsync for the removal: a journal that reappears after a power loss only names renames and
  // deletes that are already done (its temps are gone), and the next commit's directory fsync
  // makes the removal durable before that commit renames anything.
  remove_file(journal_name(prefix));
  if (hooks) crash_point(7);
}

}  // namespace

std::string index_name(const std::string& prefix) { return prefix + kIndexSuffix; }

std::string data_name(const std::string& prefix, int shard, int num_shards) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%05d-of-%05d", shard, num_shards);
  return prefix + kDataSuffix + buf;
}

std::string journal_name(const std::string& prefix) { return prefix + kJournalSuffix; }

std::string temp_name(const std::string& final_path, const std::string& token) {
  return final_path + kTempInfix + token;
}

namespace {

// FASTCKPT_TEST_PAUSE_AT (commit.h): announce, then sleep until killed, timed out or released.
void pause_point(int step) {
  const char* at = std::getenv("FASTCKPT_TEST_PAUSE_AT");
  if (!at || !*at || std::atoi(at) != step) return;
  const char* file = std::getenv("FASTCKPT_TEST_PAUSE_FILE");
  const char* secs = std::getenv("FASTCKPT_TEST_PAUSE_SECONDS");
  double limit = secs && *secs ? std::atof(secs) : 60.0;
  if (!(limit >= 0)) limit = 60.0;
  // One write(2) of the whole line, so the announcement is never torn by another writer.
  const std::string line = "FASTCKPT_PAUSED " + std::to_string(step) + "\n";
  auto announce = [&](int fd) {
    ssize_t w;
    do w = ::write(fd, line.data(), line.size());
    while (w < 0 && errno == EINTR);
  };
  bool use_file = file && *file;
  if (use_file) {
    const int fd = ::open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      announce(fd);
      ::close(fd);
    } else {
      use_file = false;
    }
  }
  if (!use_file) announce(2);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(limit);
  while (std::chrono::steady_clock::now() < deadline) {
    if (use_file && !path_exists(file)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace

void crash_point(int step) {
  const char* env = std::getenv("FASTCKPT_TEST_CRASH_AT");
  if (env && *env && std::atoi(env) == step) ::_exit(86);
  pause_point(step);
}

std::string encode_journal(const Journal& j) {
  std::string s = std::string(kJournalMagic) + "\ntoken\t" + j.token + "\n";
  for (const auto& n : j.renames) s += "rename\t" + n + "\n";
  for (const auto& n : j.deletes) s += "delete\t" + n + "\n";
  s += "end\t" + crc_hex(s) + "\n";
  return s;
}

Journal decode_journal(const std::string& bytes, const std::string& prefix, const std::string& path) {
  auto fail = [&](const std::string& why) -> FormatError {
    return FormatError(path + ": bad commit journal (" + why + ")", path);
  };
  const std::string base = basename_of(prefix);
  const size_t end_pos = bytes.rfind("end\t");
  if (end_pos == std::string::npos || bytes.size() != end_pos + 4 + 8 + 1 || bytes.back() != '\n')
    throw fail("no end line");
  if (bytes.compare(end_pos + 4, 8, crc_hex(bytes.substr(0, end_pos))) != 0) throw fail("checksum");
  Journal j;
  size_t pos = 0;
  bool magic = false;
  while (pos < end_pos) {
    const size_t nl = bytes.find('\n', pos);
    const std::string line = bytes.substr(pos, nl - pos);
    pos = nl + 1;
    if (!magic) {
      if (line != kJournalMagic) throw fail("unknown version");
      magic = true;
      continue;
    }
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) throw fail("bad line");
    const std::string kind = line.substr(0, tab), arg = line.substr(tab + 1);
    if (kind == "token" && is_hex_token(arg)) j.token = arg;
    else if (kind == "rename" && is_own_final(arg, base)) j.renames.push_back(arg);
    else if (kind == "delete" && is_data_name(arg, base)) j.deletes.push_back(arg);
    else throw fail("bad line '" + line + "'");
  }
  if (j.token.empty()) throw fail("no token");
  return j;
}

std::optional<Journal> read_journal(const std::string& prefix) {
  const std::string path = journal_name(prefix);
  Fd fd = try_open_read(path);
  if (!fd) return std::nullopt;
  const uint64_t size = file_size(fd.get(), path);
  if (size > kMaxJournalBytes) throw FormatError(path + ": commit journal larger than the limit", path);
  std::string bytes(static_cast<size_t>(size), '\0');
  pread_exact(fd.get(), bytes.data(), bytes.size(), 0, path);
  return decode_journal(bytes, prefix, path);
}

static bool listed(const std::optional<Journal>& j, const std::string& final_path) {
  if (!j) return false;
  const std::string name = basename_of(final_path);
  for (const auto& n : j->renames)
    if (n == name) return true;
  return false;
}

Fd open_resolved(const std::string& final_path, const std::optional<Journal>& journal) {
  if (listed(journal, final_path)) {
    // The temp vanishes only by being renamed to the final name, so falling back is race-free.
    if (Fd fd = try_open_read(temp_name(final_path, journal->token))) return fd;
  }
  return open_read(final_path);
}

std::optional<FileId> stat_resolved(const std::string& final_path, const std::optional<Journal>& journal) {
  struct stat st;
  if (listed(journal, final_path) && ::stat(temp_name(final_path, journal->token).c_str(), &st) == 0)
    return FileId{st.st_dev, st.st_ino};
  if (::stat(final_path.c_str(), &st) == 0) return FileId{st.st_dev, st.st_ino};
  return std::nullopt;
}

void commit_files(const std::string& prefix, const std::vector<std::string>& new_finals,
                  const std::string& token, bool durable, std::vector<Fd>* hold_replaced) {
  const std::string base = basename_of(prefix);
  Journal j;
  j.token = token;
  for (const auto& f : new_finals) j.renames.push_back(basename_of(f));
  for (const auto& name : list_dir(dirname_of(prefix))) {
    if (!is_data_name(name, base)) continue;
    bool keep = false;
    for (const auto& n : j.renames) keep = keep || n == name;
    if (!keep) j.deletes.push_back(name);
  }
  crash_point(2);
  atomic_write_file(journal_name(prefix), encode_journal(j), durable);
  crash_point(3);
  roll_forward(prefix, j, durable, /*hooks=*/true, hold_replaced);
}

void refuse_directories(const std::string& prefix, const std::vector<std::string>& finals) {
  std::vector<std::string> names = finals;
  names.push_back(index_name(prefix));
  names.push_back(journal_name(prefix));
  const std::string dir = dirname_of(prefix), base = basename_of(prefix);
  std::vector<std::string> listing;
  try {
    listing = list_dir(dir);
  } catch (const NotFoundError&) {
    // no directory: nothing can be in the way (the write itself reports the missing directory)
  }
  for (const auto& name : listing)
    if (is_data_name(name, base)) names.push_back(join_path(dir, name));
  for (const auto& path : names) {
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      throw SystemError("a directory is in the way of checkpoint file " + path +
                            " (expected a regular file or nothing at this name)",
                        path, EISDIR);
  }
}

bool recover_prefix(const std::string& prefix, bool durable) {
  bool changed = false;
  if (auto j = read_journal(prefix)) {
    roll_forward(prefix, *j, durable, /*hooks=*/false);
    changed = true;
  }
  const std::string dir = dirname_of(prefix), base = basename_of(prefix);
  for (const auto& name : list_dir(dir)) {
    if (is_own_temp(name, base)) {
      remove_file(join_path(dir, name));
      changed = true;
    }
  }
  if (changed && durable) fsync_dir(dir);
  return changed;
}

void delete_prefix(const std::string& prefix, bool durable) {
  recover_prefix(prefix, false);
  const std::string dir = dirname_of(prefix), base = basename_of(prefix);
  remove_file(index_name(prefix));
  for (const auto& name : list_dir(dir))
    if (is_data_name(name, base)) remove_file(join_path(dir, name));
  if (durable) fsync_dir(dir);
}

}  // namespace fastckpt::io
