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

// Single call into the BLAS, on the calling thread, no splitting.
void blas_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                int lda, const float* B, int ldb, float beta, float* C, int ldc);

void blas_set_num_threads(int n);
std::string blas_vendor();
std::string blas_config();

}  // namespace fastckpt
