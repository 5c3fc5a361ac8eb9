// The one place that knows which BLAS we link. Row-major single-precision GEMM only.
#pragma once

#include <string>

namespace fastckpt {

// C = alpha * op(A) * op(B) + beta * C, all row-major; op(A) is M x K, op(B) is K x N.
// Large products are split along the longer side of C across num_threads() threads, each
// calling a single-threaded BLAS; each element is still one dot product over K in the same order,
// so results are identical whatever the thread count (tested).
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);

// The rows per block when gemm splits an M x N x K product by rows of C (blocks of this many
// rows, the last one shorter, one per thread), or 0 when it splits by columns or not at all.
// Kernels that fuse work around the product (Dense's bias and activation) use it to make the
// very same BLAS calls per block as gemm would, so their results are gemm's bit for bit.
int gemm_row_block(int M, int N, int K);

// Single call into the BLAS, on the calling thread, no splitting.
void blas_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                int lda, const float* B, int ldb, float beta, float* C, int ldc);

// Weights prepared once for many products A . W on any thread: a predict pass, where the weights
// do not change during the call. Where the provider has a packed form (MKL: cblas_sgemm_pack) and
// packing is on (blas_packed_b_enabled) and pays for the shape (blas_packed_b_pays), prepare()
// packs W into the provider's internal layout; otherwise it keeps W's pointer and multiply() is
// blas_sgemm, with its bits. The packed form rounds differently from blas_sgemm in the last bits
// (never compare the two bit for bit), and a row's bits can depend on the rows of its multiply()
// call (MKL's AVX2 kernels do): to keep results independent of the thread count, make the same
// calls whatever the threads (dense_chain_forward takes fixed chunks). Callers need no #ifdef.
class PackedB {
 public:
  PackedB() = default;
  PackedB(const PackedB&) = delete;
  PackedB& operator=(const PackedB&) = delete;
  ~PackedB();
  // W is K x N row-major with leading dimension ldw; products will take at most max_rows rows.
  // W must stay alive and unchanged while this object is used.
  void prepare(const float* W, int K, int N, int ldw, int max_rows);
  // C (rows x N) = A (rows x K) . W + beta * C, one BLAS call on the calling thread.
  void multiply(int rows, const float* A, int lda, float beta, float* C, int ldc) const;
  bool packed() const { return packed_ != nullptr; }

 private:
  const float* W_ = nullptr;
  int K_ = 0, N_ = 0, ldw_ = 0;
  float* packed_ = nullptr;
};

// Whether this build's BLAS has a packed-weights form (MKL builds only).
bool blas_packed_b_available();
// Whether PackedB packs at all: off by default; FASTCKPT_PACKED_GEMM=1 in the environment (read
// once) or blas_set_packed_b(true) turns it on where available (setting it on elsewhere leaves it
// off). Off, every product is blas_sgemm's.
bool blas_packed_b_enabled();
void blas_set_packed_b(bool on);
// Whether packing W (K x N) for products of M rows pays (measured with bench/mkl/packed.cpp and
// bench/blas_compare.py): enough rows to amortize the pack, enough columns for the packed kernels.
bool blas_packed_b_pays(int M, int N, int K);

void blas_set_num_threads(int n);
std::string blas_vendor();
std::string blas_config();

}  // namespace fastckpt
