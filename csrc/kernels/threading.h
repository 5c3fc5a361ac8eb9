// Thread policy shared by every kernel.
//
// fastckpt owns a single thread budget: `num_threads()` OpenMP threads for its own loops. BLAS is
// driven with one thread per call and fastckpt splits large products across its own threads, so
// the two pools never run at the same time (no BLAS threads x OpenMP threads oversubscription).
#pragma once

#include <cstddef>
#include <functional>

namespace fastckpt {

// Number of threads fastckpt kernels use (>= 1). Defaults to the OpenMP default (OMP_NUM_THREADS
// or the number of cores), overridable with FASTCKPT_NUM_THREADS or set_num_threads().
//
// While a background job that needs a core of its own is running (a checkpoint writer, between
// background_begin() and background_end()), num_threads() is one fewer than configured (never
// below 1), so the job does not take a core from the kernels' team. Every kernel reads the count
// once per call and its results do not depend on it (tests/test_kernels.py), so the count may
// change between two kernels of one training step.
int num_threads();
void set_num_threads(int n);
// The count set by set_num_threads / the environment, whatever runs in the background.
int configured_num_threads();
void background_begin();
void background_end();
int background_jobs();

// Around a call that waits rather than computes (fsync, an O_DIRECT write) on a thread inside
// background_begin/end: the kernels have all their threads back for its duration. A no-op on
// any other thread.
bool background_pause();          // true when this thread's job was paused
void background_resume(bool paused);
class BlockingSection {
 public:
  BlockingSection() : paused_(background_pause()) {}
  ~BlockingSection() { background_resume(paused_); }
  BlockingSection(const BlockingSection&) = delete;
  BlockingSection& operator=(const BlockingSection&) = delete;

 private:
  bool paused_;
};

// Calls fn(i) for i in [0, n) on fastckpt's threads (OpenMP, dynamic schedule): the same team the
// kernels use, so work between kernels (a checkpoint snapshot at the end of an epoch) lands on
// threads that are already running rather than competing with them. The first exception thrown
// by fn is rethrown on the caller's thread once all tasks stopped.
void parallel_tasks(size_t n, const std::function<void(size_t)>& fn);

// Whether the library was compiled with OpenMP.
bool openmp_enabled();

}  // namespace fastckpt
