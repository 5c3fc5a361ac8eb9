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
