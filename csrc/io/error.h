// Exceptions thrown by the io layer. Each carries what is known about where a problem is, so the
// Python binding can raise fastckpt.errors.* with `path`, `tensor` and `offset` attributes.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastckpt::io {

// The bytes of a file are not what the format allows (bad magic, CRC, offset, size, record...).
// offset is a byte offset in `path`, or -1 when unknown.
class FormatError : public std::runtime_error {
 public:
  FormatError(const std::string& what, std::string path = {}, std::string key = {},
              int64_t offset = -1)
      : std::runtime_error(what), path_(std::move(path)), key_(std::move(key)), offset_(offset),
        has_key_(!key_.empty()) {}
  const std::string& path() const { return path_; }
  const std::string& key() const { return key_; }
  int64_t offset() const { return offset_; }
  bool has_key() const { return has_key_; }
  // Context is filled in by outer layers that know it; inner layers know only bytes.
  FormatError& set_path(const std::string& p) { if (path_.empty()) path_ = p; return *this; }
  FormatError& set_key(const std::string& k) { if (!has_key_) { key_ = k; has_key_ = true; } return *this; }

 private:
  std::string path_, key_;
  int64_t offset_;
  bool has_key_;
};

// A file that must exist does not (missing .index, missing shard).
class NotFoundError : public std::runtime_error {
 public:
  NotFoundError(const std::string& what, std::string path)
      : std::runtime_error(what), path_(std::move(path)) {}
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The operating system refused (permissions, disk full...). errno is kept for OSError.
class SystemError : public std::runtime_error {
 public:
  SystemError(const std::string& what, std::string path, int err)
      : std::runtime_error(what), path_(std::move(path)), err_(err) {}
  const std::string& path() const { return path_; }
  int err() const { return err_; }

 private:
  std::string path_;
  int err_;
};

// Throws SystemError (or NotFoundError for ENOENT) describing `op` on `path` with the current errno.
[[noreturn]] void throw_errno(const std::string& op, const std::string& path);

}  // namespace fastckpt::io
