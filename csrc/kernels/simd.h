// Run-time ISA dispatch for the element-wise loops: the compiler emits a baseline x86-64 (SSE2)
// version plus AVX2 and AVX-512 clones of a function and picks one at load time (ifunc), so wheels
// stay portable and still use the wide units where the CPU has them. The kernels are compiled with
// -ffp-contract=off, so every clone rounds exactly like the baseline: results do not depend on the
// CPU the code runs on.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__) && \
    !defined(FASTCKPT_NO_MULTIVERSION) && !defined(__SANITIZE_ADDRESS__)
#define FASTCKPT_CLONES __attribute__((target_clones("default", "avx2", "avx512f")))
#else
#define FASTCKPT_CLONES
#endif

// For loops written with explicit std::fma (one rounding, so every clone still gives the same
// bits): clones whose instruction sets include FMA, so the calls become vfmadd instructions and
// the loops vectorize. The baseline clone calls libm's fmaf (exact, slow): only x86-64 CPUs
// without FMA (before 2013) run it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && \
    defined(__linux__) && !defined(FASTCKPT_NO_MULTIVERSION) && !defined(__SANITIZE_ADDRESS__)
#define FASTCKPT_CLONES_FMA \
  __attribute__((target_clones("default", "arch=x86-64-v3", "avx512f")))
#else
#define FASTCKPT_CLONES_FMA FASTCKPT_CLONES
#endif
