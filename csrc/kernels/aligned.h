// A minimal 64-byte-aligned, non-initializing buffer for kernel workspaces.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace fastckpt {

template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  ~AlignedBuffer() { std::free(p_); }

  // Grows (never shrinks) to at least n elements; contents are not preserved.
  void reserve(size_t n) {
    if (n <= n_) return;
    std::free(p_);
    const size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
    p_ = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!p_) throw std::bad_alloc();
    n_ = n;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace fastckpt
