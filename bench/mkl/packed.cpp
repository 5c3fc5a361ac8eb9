// MKL's packed-weights API against plain sgemm on the predict products, split over threads as
// fastckpt's predict chain splits them (bench/blas_compare.py measures the same inside fastckpt).
// Times are each thread's CPU time, the slowest thread's per call (the critical path), so other
// processes on a shared machine do not inflate them; cases alternate per repetition, medians.
//   g++ -O2 -std=c++17 -fopenmp -I$VENV/include bench/mkl/packed.cpp -o /tmp/mkl_packed \
//     -Wl,--start-group $VENV/lib/libmkl_intel_lp64.a $VENV/lib/libmkl_sequential.a \
//     $VENV/lib/libmkl_core.a -Wl,--end-group -lpthread -lm -ldl
//   OMP_WAIT_POLICY=passive /tmp/mkl_packed 2 21          # threads, repetitions
//   MKL_ENABLE_INSTRUCTIONS=AVX2 OMP_WAIT_POLICY=passive /tmp/mkl_packed 2 21
// ($VENV: where `pip install mkl-static mkl-include` put lib/ and include/.)
#include <mkl.h>
#include <omp.h>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <random>
#include <vector>
using clk = std::chrono::steady_clock;
static double now() { return std::chrono::duration<double>(clk::now().time_since_epoch()).count(); }
static std::vector<float> rnd(size_t n, int s) { std::mt19937 g(s); std::normal_distribution<float> d; std::vector<float> v(n); for (auto& x : v) x = d(g); return v; }
#include <time.h>
static double cpu() { timespec ts; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }
static double crit[64];
static double medv(std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }
int main(int argc, char** argv) {
  int nt = argc > 1 ? atoi(argv[1]) : 2; int reps = argc > 2 ? atoi(argv[2]) : 41;
  mkl_set_num_threads(1);
  for (auto [M, K, N] : {std::array<int,3>{1000, 784, 512}, {256, 784, 512}, {1000, 512, 10}}) {
    auto A = rnd((size_t)M * K, 1), B = rnd((size_t)K * N, 2);
    std::vector<float> C1((size_t)M * N), C2((size_t)M * N), C3((size_t)M * N);
    int block = nt > 1 ? ((M + nt - 1) / nt + 15) / 16 * 16 : M;
    int nb = (M + block - 1) / block;
    size_t sz = cblas_sgemm_pack_get_size(CblasBMatrix, M, N, K);
    float* P = (float*)mkl_malloc(sz, 64);
    auto plain = [&] {
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int b = 0; b < nb; ++b) { double c0 = cpu(); int r0 = b * block, r = std::min(block, M - r0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, N, K, 1.f, &A[(size_t)r0 * K], K, B.data(), N, 0.f, &C1[(size_t)r0 * N], N); crit[b] += cpu() - c0; }
    };
    auto pack = [&] { double c0 = cpu(); cblas_sgemm_pack(CblasRowMajor, CblasBMatrix, CblasNoTrans, M, N, K, 1.f, B.data(), N, P); crit[0] += cpu() - c0; };
    auto comp = [&] {
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int b = 0; b < nb; ++b) { double c0 = cpu(); int r0 = b * block, r = std::min(block, M - r0);
        cblas_sgemm_compute(CblasRowMajor, CblasNoTrans, CblasPacked, r, N, K, &A[(size_t)r0 * K], K, P, N, 0.f, &C2[(size_t)r0 * N], N); crit[b] += cpu() - c0; }
    };
    const int CH = getenv("CH") ? atoi(getenv("CH")) : 96; int nch = (M + CH - 1) / CH;
    std::vector<float> C4((size_t)M * N);
    auto compch = [&] {
#pragma omp parallel num_threads(nt)
      { double c0 = cpu(); int t = omp_get_thread_num();
#pragma omp for schedule(static) nowait
      for (int c = 0; c < nch; ++c) { int r0 = c * CH, r = std::min(CH, M - r0);
        cblas_sgemm_compute(CblasRowMajor, CblasNoTrans, CblasPacked, r, N, K, &A[(size_t)r0 * K], K, P, N, 0.f, &C4[(size_t)r0 * N], N); }
      crit[t] += cpu() - c0; }
    };
    pack(); comp(); plain();
    // rows computed in one call vs blocks: same bits?
    cblas_sgemm_compute(CblasRowMajor, CblasNoTrans, CblasPacked, M, N, K, A.data(), K, P, N, 0.f, C3.data(), N);
    bool blk_same = memcmp(C3.data(), C2.data(), C2.size() * 4) == 0;
    for (int r0 = 0; r0 < M; r0 += 7) { int r = std::min(7, M - r0); cblas_sgemm_compute(CblasRowMajor, CblasNoTrans, CblasPacked, r, N, K, &A[(size_t)r0*K], K, P, N, 0.f, &C3[(size_t)r0*N], N); }
    bool blk7_same = memcmp(C3.data(), C2.data(), C2.size() * 4) == 0;
    double fl = 2.0 * M * N * K;
    auto t = [&](auto f, int inner) { for (int b = 0; b < 64; ++b) crit[b] = 0; for (int i = 0; i < inner; ++i) f(); double m = 0; for (int b = 0; b < nb; ++b) m = std::max(m, crit[b]); return m / inner; };
    int inner = std::max(1, int(0.01 / t(plain, 3)));
    std::vector<double> tp, tc, tpc, r1, r2, tk, tch, r3;
    for (int rep = 0; rep < reps; ++rep) {
      double a = t(plain, inner), b = t(comp, inner), c = t([&] { pack(); comp(); }, inner), d = t(pack, inner);
      int nb_save = nb; nb = nt; double e = t(compch, inner); nb = nb_save; tch.push_back(e); r3.push_back(a / e);
      tp.push_back(a); tc.push_back(b); tpc.push_back(c); tk.push_back(d); r1.push_back(a / b); r2.push_back(a / c);
    }
    printf("cpu-critical-path %dt %4dx%dx%d: sgemm %.3f ms (%.0f GF/s) | packed cached %.3f ms (%.0f), ratio %.2fx | pack+compute %.3f ms (%.0f), ratio %.2fx | pack %.3f ms, %zu B | bits vs blocks %d/%d\n",
           nt, M, K, N, medv(tp)*1e3, fl/medv(tp)/1e9, medv(tc)*1e3, fl/medv(tc)/1e9, medv(r1), medv(tpc)*1e3, fl/medv(tpc)/1e9, medv(r2), medv(tk)*1e3, sz, blk_same, blk7_same);
    compch(); printf("   chunks of %d rows (cached pack): %.3f ms, ratio %.2fx; bits vs one-call-per-thread %d\n", CH, medv(tch)*1e3, medv(r3), memcmp(C4.data(), C2.data(), C2.size()*4)==0);
    mkl_free(P);
  }
}
