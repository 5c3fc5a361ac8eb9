// Thin POSIX wrappers used by the bundle reader, writer and commit protocol: RAII descriptors,
// read-only memory maps that outlive their reader, durable small-file writes.
//
// Every failure throws: NotFoundError for ENOENT, SystemError otherwise (both name the path).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fastckpt::io {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  int release() { int f = fd_; fd_ = -1; return f; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Opens read-only; NotFoundError when missing.
Fd open_read(const std::string& path);
// Like open_read but returns an empty Fd on ENOENT instead of throwing.
Fd try_open_read(const std::string& path);
// Creates a new file that must not exist yet (O_EXCL), read-write.
Fd create_new(const std::string& path);

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileId& o) const { return dev == o.dev && ino == o.ino; }
};
FileId file_id(int fd, const std::string& path);
uint64_t file_size(int fd, const std::string& path);

// Reads exactly n bytes at `offset` (short files are a FormatError naming `path`).
void pread_exact(int fd, void* buf, size_t n, uint64_t offset, const std::string& path);
void pwrite_all(int fd, const void* buf, size_t n, uint64_t offset, const std::string& path);

void fsync_fd(int fd, const std::string& path);
void fsync_dir(const std::string& dir);

// A read-only shared mapping of a whole file. Tensors handed to Python hold a shared_ptr to it, so
// the mapping lives until the last view dies, whatever happens to the reader or the file name.
class Mapping {
 public:
  Mapping(int fd, uint64_t size, const std::string& path);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Path helpers. dirname("a/b.ckpt") == "a", dirname("b.ckpt") == ".".
std::string dirname_of(const std::string& path);
std::string basename_of(const std::string& path);
std::string join_path(const std::string& dir, const std::string& name);
// Names in a directory (not "." / ".."). Missing directory -> NotFoundError.
std::vector<std::string> list_dir(const std::string& dir);
bool path_exists(const std::string& path);
// rename(2) / unlink(2) that throw; remove_file tolerates ENOENT.
void rename_file(const std::string& from, const std::string& to);
void remove_file(const std::string& path);

// 16 lowercase hex digits from the OS random source, for temp-file names.
std::string random_token();

// Writes `data` to `path` atomically: a sibling temp file, fsync (if asked), rename over `path`,
// then fsync of the directory (if asked). Readers see the old or the new content, never a mix;
// an existing file is replaced, never truncated.
void atomic_write_file(const std::string& path, const std::string& data, bool durable);

}  // namespace fastckpt::io
