// MKL's JIT sgemm (mkl_jit_create_sgemm) against plain sgemm on the tutorial's training-step
// products, split over threads as fastckpt's gemm splits them. Build and run as bench/mkl/packed.cpp
// (the slowest thread's CPU time per call; cases alternate per repetition; medians).
#include <mkl.h>
#include <omp.h>
#include <time.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
static double cpu() { timespec ts; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }
static std::vector<float> rnd(size_t n, int s) { std::mt19937 g(s); std::normal_distribution<float> d; std::vector<float> v(n); for (auto& x : v) x = d(g); return v; }
static double medv(std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }
int main(int argc, char** argv) {
  int nt = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 21;
  struct S { const char* name; bool ta, tb; int M, N, K; };
  for (S s : {S{"fwd 32x784.784x512", false, false, 32, 512, 784}, S{"wgrad x^T g 784x512 k32", true, false, 784, 512, 32},
              S{"dx g.W^T 32x784 k512", false, true, 32, 784, 512}, S{"fwd2 32x512.512x10", false, false, 32, 10, 512},
              S{"wgrad2 512x10 k32", true, false, 512, 10, 32}, S{"dx2 32x512 k10", false, true, 32, 512, 10}}) {
    int lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    auto A = rnd((size_t)s.M * s.K, 3), B = rnd((size_t)s.K * s.N, 4);
    std::vector<float> C1((size_t)s.M * s.N), C2((size_t)s.M * s.N);
    bool rows = s.M > s.N; int len = rows ? s.M : s.N; double fl = 2.0 * s.M * s.N * s.K;
    int block = fl < 1e6 || nt <= 1 || len < 32 * nt ? len : ((len + nt - 1) / nt + 15) / 16 * 16;
    int nb = (len + block - 1) / block, tail = len - (nb - 1) * block;
    auto aoff = [&](int k0) { return rows ? (s.ta ? (size_t)k0 : (size_t)k0 * lda) : (size_t)0; };
    auto boff = [&](int k0) { return rows ? (size_t)0 : (s.tb ? (size_t)k0 * ldb : (size_t)k0); };
    auto coff = [&](int k0) { return rows ? (size_t)k0 * s.N : (size_t)k0; };
    double crit[8];
    void *j1 = nullptr, *j2 = nullptr;
    auto mk = [&](int nk, void** j) { return mkl_jit_create_sgemm(j, MKL_ROW_MAJOR, s.ta ? MKL_TRANS : MKL_NOTRANS, s.tb ? MKL_TRANS : MKL_NOTRANS,
                                                 rows ? nk : s.M, rows ? s.N : nk, s.K, 1.f, lda, ldb, 0.f, s.N); };
    mk(block, &j1); mk(tail, &j2);
    sgemm_jit_kernel_t k1 = mkl_jit_get_sgemm_ptr(j1), k2 = mkl_jit_get_sgemm_ptr(j2);
    auto plain = [&] {
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int b = 0; b < nb; ++b) { double c0 = cpu(); int k0 = b * block, nk = std::min(block, len - k0);
        cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, rows ? nk : s.M, rows ? s.N : nk, s.K, 1.f,
                    &A[aoff(k0)], lda, &B[boff(k0)], ldb, 0.f, &C1[coff(k0)], s.N); crit[b] += cpu() - c0; }
    };
    auto jit = [&] {
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int b = 0; b < nb; ++b) { double c0 = cpu(); int k0 = b * block; bool last = b == nb - 1;
        (last ? k2 : k1)(last ? j2 : j1, &A[aoff(k0)], &B[boff(k0)], &C2[coff(k0)]); crit[b] += cpu() - c0; }
    };
    auto t = [&](auto f, int inner) { for (auto& c : crit) c = 0; for (int i = 0; i < inner; ++i) f(); double m = 0; for (int b = 0; b < nb; ++b) m = std::max(m, crit[b]); return m / inner; };
    plain(); jit(); bool same = memcmp(C1.data(), C2.data(), C1.size() * 4) == 0;
    int inner = std::max(1, int(0.005 / std::max(t(plain, 3), 1e-7)));
    std::vector<double> tp, tj, r;
    for (int rep = 0; rep < reps; ++rep) { double a = t(plain, inner), b = t(jit, inner); tp.push_back(a); tj.push_back(b); r.push_back(a / b); }
    printf("%dt %-24s blocks %d: sgemm %.1f us (%.0f GF/s)  jit %.1f us (%.0f GF/s)  jit speedup %.2fx  same bits %d\n", nt, s.name, nb,
           medv(tp) * 1e6, fl / medv(tp) / 1e9, medv(tj) * 1e6, fl / medv(tj) / 1e9, medv(r), same);
    mkl_jit_destroy(j1); mkl_jit_destroy(j2);
  }
}
