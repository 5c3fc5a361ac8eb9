"""GEMM rate of one fastckpt build, for comparing BLAS providers (bench/README.md, "GEMM provider").

    python bench/gemm_providers.py --fastckpt-path /tmp/fastckpt-mkl --threads 1 2

Prints one JSON line: the build's BLAS and, per thread count and shape, the median GFLOP/s of
``fastckpt.ops.gemm`` over --reps timed batches (each batch long enough to be ~20 ms). Compare
providers by running this alternately for each build (drift on a shared machine cancels out) and
taking medians across runs. Dispatch controls (MKL_ENABLE_INSTRUCTIONS=AVX2,
OPENBLAS_CORETYPE=Haswell) are read from the environment, so set them on the command line.
"""
import argparse
import json
import statistics
import sys
import time

# (name, trans_a, a shape, b shape): the tutorial's dense layer 784 -> 512 at batch 32.
SHAPES = [
    ("fwd 32x784.784x512", False, (32, 784), (784, 512)),
    ("wgrad 784x32.32x512", True, (32, 784), (32, 512)),
    ("big 1000x784.784x512", False, (1000, 784), (784, 512)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fastckpt-path", default=None)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    if args.fastckpt_path:
        sys.path.insert(0, args.fastckpt_path)
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    import numpy as np

    import fastckpt
    from fastckpt import ops

    rng = np.random.default_rng(0)
    out = {"file": fastckpt.__file__, "blas": ops.build_info()["blas"], "rates": {}}
    for nt in args.threads:
        ops.set_num_threads(nt)
        for name, ta, sa, sb in SHAPES:
            a = rng.standard_normal(sa, dtype=np.float32)
            b = rng.standard_normal(sb, dtype=np.float32)
            m, k = (sa[1], sa[0]) if ta else sa
            n = sb[1]
            c = np.empty((m, n), np.float32)
            flops = 2.0 * m * n * k
            for _ in range(20):
                ops.gemm(a, b, c, trans_a=ta)
            t0 = time.perf_counter()
            ops.gemm(a, b, c, trans_a=ta)
            inner = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-7)))
            rates = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                for _ in range(inner):
                    ops.gemm(a, b, c, trans_a=ta)
                rates.append(flops * inner / (time.perf_counter() - t0) / 1e9)
            out["rates"][f"{nt}t {name}"] = round(statistics.median(rates), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
