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

void blas_set_num_threads(int n);
std::string blas_vendor();
std::string blas_config();

}  // namespace fastckpt
