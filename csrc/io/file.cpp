#include "io/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif

#include <cerrno>
#include <cstring>
#include <random>

#include "fastckpt/format.h"
#include "io/error.h"
#include "kernels/threading.h"

namespace fastckpt::io {

void throw_errno(const std::string& op, const std::string& path) {
  const int err = errno;
  const std::string msg = op + " " + path + ": " + std::strerror(err);
  if (err == ENOENT) throw NotFoundError(msg, path);
  throw SystemError(msg, path, err);
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd try_open_read(const std::string& path) {
  int fd;
  // O_NONBLOCK: a FIFO (or device) planted under a checkpoint's name must not block the open; it
  // is refused below. On a regular file the flag changes nothing, and it is cleared anyway.
  do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == ENOENT) return Fd();
    throw_errno("cannot open", path);
  }
  Fd out(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) throw_errno("cannot stat", path);
  if (!S_ISREG(st.st_mode)) throw SystemError("not a regular file: " + path, path, EINVAL);
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) throw_errno("cannot set flags on", path);
  return out;
}

Fd open_read(const std::string& path) {
  Fd fd = try_open_read(path);
  if (!fd) throw NotFoundError("no such file: " + path, path);
  return fd;
}

Fd create_new(const std::string& path) {
  int fd;
  do fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_errno("cannot create", path);
  return Fd(fd);
}

FileId file_id(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) throw_errno("cannot stat", path);
  return FileId{st.st_dev, st.st_ino};
}

uint64_t file_size(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) throw_errno("cannot stat", path);
  if (!S_ISREG(st.st_mode)) throw SystemError("not a regular file: " + path, path, EINVAL);
  return static_cast<uint64_t>(st.st_size);
}

void pread_exact(int fd, void* buf, size_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<char*>(buf);
  while (n) {
    const ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot read", path);
    }
    if (got == 0)
      throw FormatError(path + ": file shorter than expected at byte " + std::to_string(offset), path,
                        {}, static_cast<int64_t>(offset));
    p += got;
    n -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
}

void pwrite_all(int fd, const void* buf, size_t n, uint64_t offset, const std::string& path) {
  const auto* p = static_cast<const char*>(buf);
  while (n) {
    // Linux caps one write at ~2 GiB; chunking also keeps each call interruptible.
    const size_t chunk = n < (size_t(1) << 30) ? n : (size_t(1) << 30);
    const ssize_t put = ::pwrite(fd, p, chunk, static_cast<off_t>(offset));
    if (put < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot write", path);
    }
    p += put;
    n -= static_cast<size_t>(put);
    offset += static_cast<uint64_t>(put);
  }
}

void fsync_fd(int fd, const std::string& path) {
  fastckpt::BlockingSection waits;  // a background writer waits here: the kernels take the core
  if (::fsync(fd) != 0) throw_errno("cannot fsync", path);
}

void fsync_dir(const std::string& dir) {
  int fd;
  do fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_errno("cannot open directory", dir);
  Fd guard(fd);
  // Some file systems refuse fsync on directories (EINVAL); nothing more can be done there.
  fastckpt::BlockingSection waits;
  if (::fsync(fd) != 0 && errno != EINVAL) throw_errno("cannot fsync directory", dir);
}

Mapping::Mapping(int fd, uint64_t size, const std::string& path) : size_(size) {
  if (size == 0) return;  // mmap of 0 bytes is an error; an empty shard needs no mapping
  if (size > static_cast<uint64_t>(SIZE_MAX)) throw SystemError("file too large to map: " + path, path, EFBIG);
  void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw_errno("cannot map", path);
  data_ = static_cast<const uint8_t*>(p);
}

Mapping::~Mapping() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
}

std::string dirname_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string basename_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir == ".") return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::vector<std::string> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_errno("cannot list directory", dir);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
  }
  ::closedir(d);
  return names;
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

void rename_file(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) throw_errno("cannot rename " + from + " to", to);
}

void remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove", path);
}

std::string random_token() {
  // getrandom(2): ~0.5 us. std::random_device costs 40-50 us per token on this VM (it probes the
  // CPU with cpuid, which traps to the hypervisor), twice per save.
  uint64_t v = 0;
#if defined(__linux__)
  const bool got = ::getrandom(&v, sizeof v, 0) == static_cast<ssize_t>(sizeof v);
#else
  const bool got = false;
#endif
  if (!got) {
    std::random_device rd;  // kernels without getrandom
    v = (uint64_t(rd()) << 32) ^ rd();
  }
  v ^= uint64_t(::getpid()) << 16;
  static const char* hex = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 0; i < 16; ++i) s[i] = hex[(v >> (4 * (15 - i))) & 15];
  return s;
}

void atomic_write_file(const std::string& path, const std::string& data, bool durable) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw SystemError("a directory is in the way of the file to save: " + path, path, EISDIR);
  const std::string tmp = path + format::kTempInfix + random_token();
  try {
    Fd fd = create_new(tmp);
    pwrite_all(fd.get(), data.data(), data.size(), 0, tmp);
    if (durable) fsync_fd(fd.get(), tmp);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  try {
    rename_file(tmp, path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (durable) fsync_dir(dirname_of(path));
}

}  // namespace fastckpt::io
