#include "kernels/blas.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/fpmode.h"
#include "kernels/threading.h"

#if defined(FASTCKPT_BLAS_SCIPY_OPENBLAS)
#include <cblas.h>
#define FCK_SGEMM scipy_cblas_sgemm
#elif defined(FASTCKPT_BLAS_MKL)
#include <mkl_cblas.h>
#include <mkl_service.h>
#define FCK_SGEMM cblas_sgemm
#else
#include <cblas.h>
#define FCK_SGEMM cblas_sgemm
#if defined(FASTCKPT_BLAS_OPENBLAS)
extern "C" void openblas_set_num_threads(int num_threads);
#endif
#endif

#ifndef FASTCKPT_BLAS_VENDOR
#define FASTCKPT_BLAS_VENDOR "unknown"
#endif

namespace fastckpt {

void blas_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  FCK_SGEMM(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
            M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

namespace {

// gemm's split of C: along its longer side, in blocks of `block` rows or columns (0: one call).
struct Split {
  bool rows;
  int block;
};

Split split_of(int M, int N, int K, int nt) {
  // Below ~1 MFLOP a thread hand-off costs more than it saves.
  const double flops = 2.0 * M * N * K;
  const bool split_rows = M > N;  // split the longer side of C: blocks stay wide and few
  const int len = split_rows ? M : N;
  if (nt <= 1 || flops < 1.0e6 || len < 32 * nt) return {split_rows, 0};
  // Blocks rounded to 16 so every column block starts on a cache-line boundary.
  int block = (len + nt - 1) / nt;
  block = (block + 15) / 16 * 16;
  return {split_rows, block};
}

}  // namespace

int gemm_row_block(int M, int N, int K) {
  const Split s = split_of(M, N, K, num_threads());
  return s.rows ? s.block : 0;
}

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  FlushDenormals fz;
  const int nt = num_threads();
  const Split s = split_of(M, N, K, nt);
  if (s.block == 0) {
    blas_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const bool split_rows = s.rows;
  const int len = split_rows ? M : N;
  const int block = s.block;
  const int nblocks = (len + block - 1) / block;
#pragma omp parallel num_threads(nt)
  {
    FlushDenormals fz_thread;
#pragma omp for schedule(static)
    for (int b = 0; b < nblocks; ++b) {
      const int k0 = b * block;
      const int nk = std::min(block, len - k0);
      if (split_rows) {
        // Rows k0.. of op(A): columns of A when transposed, rows otherwise.
        const float* Ak = trans_a ? A + k0 : A + static_cast<long>(k0) * lda;
        blas_sgemm(trans_a, trans_b, nk, N, K, alpha, Ak, lda, B, ldb, beta,
                   C + static_cast<long>(k0) * ldc, ldc);
      } else {
        const float* Bk = trans_b ? B + static_cast<long>(k0) * ldb : B + k0;
        blas_sgemm(trans_a, trans_b, M, nk, K, alpha, A, lda, Bk, ldb, beta, C + k0, ldc);
      }
    }
  }
}

// ---- Packed weights -------------------------------------------------------------------------

namespace {

#if defined(FASTCKPT_BLAS_MKL)
constexpr bool kHavePacked = true;
#else
constexpr bool kHavePacked = false;
#endif

// -1: not yet read from the environment.
std::atomic<int> g_packed{-1};

}  // namespace

bool blas_packed_b_available() { return kHavePacked; }

bool blas_packed_b_enabled() {
  int v = g_packed.load(std::memory_order_relaxed);
  if (v < 0) {
    // Off unless asked for: inside fastckpt it saved 2 % of predict's CPU time on MKL's AVX-512
    // path and cost 2 % on its AVX2 path (bench/blas_compare.py), and it would make predict's
    // bits differ from the layer path and the C++ runtime's.
    const char* env = std::getenv("FASTCKPT_PACKED_GEMM");
    v = kHavePacked && env && std::strcmp(env, "1") == 0 ? 1 : 0;
    int expected = -1;
    if (!g_packed.compare_exchange_strong(expected, v)) v = expected;
  }
  return v == 1;
}

void blas_set_packed_b(bool on) { g_packed.store(kHavePacked && on ? 1 : 0); }

bool blas_packed_b_pays(int M, int N, int K) {
  // MKL 2026.2, 2 threads, thread-CPU critical path: packing 784x512 costs ~0.14 ms and saves
  // ~0.3 ms per 1000 rows (1000 rows: 1.03-1.04x with the pack, 256 rows: 0.93x); at N = 10 the
  // packed kernels run at half sgemm's rate.
  return M >= 768 && N >= 64 && K >= 64;
}

PackedB::~PackedB() {
#if defined(FASTCKPT_BLAS_MKL)
  if (packed_) mkl_free(packed_);
#endif
}

void PackedB::prepare(const float* W, int K, int N, int ldw, int max_rows) {
#if defined(FASTCKPT_BLAS_MKL)
  if (packed_) {
    mkl_free(packed_);
    packed_ = nullptr;
  }
#endif
  W_ = W;
  K_ = K;
  N_ = N;
  ldw_ = ldw;
#if defined(FASTCKPT_BLAS_MKL)
  if (!blas_packed_b_enabled() || !blas_packed_b_pays(max_rows, N, K)) return;
  const size_t bytes = cblas_sgemm_pack_get_size(CblasBMatrix, max_rows, N, K);
  packed_ = static_cast<float*>(mkl_malloc(bytes, 64));
  if (!packed_) return;  // out of memory: plain sgemm, which needs none
  FlushDenormals fz;
  cblas_sgemm_pack(CblasRowMajor, CblasBMatrix, CblasNoTrans, max_rows, N, K, 1.f, W, ldw, packed_);
#else
  (void)max_rows;
#endif
}

void PackedB::multiply(int rows, const float* A, int lda, float beta, float* C, int ldc) const {
  if (rows <= 0 || N_ <= 0) return;
#if defined(FASTCKPT_BLAS_MKL)
  if (packed_) {
    cblas_sgemm_compute(CblasRowMajor, CblasNoTrans, CblasPacked, rows, N_, K_, A, lda, packed_, N_,
                        beta, C, ldc);
    return;
  }
#endif
  blas_sgemm(false, false, rows, N_, K_, 1.f, A, lda, W_, ldw_, beta, C, ldc);
}

void blas_set_num_threads(int n) {
#if defined(FASTCKPT_BLAS_SCIPY_OPENBLAS)
  scipy_openblas_set_num_threads(n);
#elif defined(FASTCKPT_BLAS_MKL)
  mkl_set_num_threads(n);
#elif defined(FASTCKPT_BLAS_OPENBLAS)
  openblas_set_num_threads(n);
#else
  (void)n;
#endif
}

std::string blas_vendor() { return FASTCKPT_BLAS_VENDOR; }

std::string blas_config() {
#if defined(FASTCKPT_BLAS_SCIPY_OPENBLAS)
  const char* c = scipy_openblas_get_config();
  return c ? c : "";
#elif defined(FASTCKPT_BLAS_MKL)
  char buf[256] = {0};
  mkl_get_version_string(buf, sizeof buf);
  return buf;
#else
  return "";
#endif
}

}  // namespace fastckpt
