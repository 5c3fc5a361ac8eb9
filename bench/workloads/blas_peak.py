"""BLAS peak: GFLOP/s of single GEMMs at the tutorial's shapes and at 2048³.

32×784×512 is the batch-32 forward, 784×32×512 the weight gradient xᵀ·dz (A transposed, as in the
backward pass), 1000×784×512 a full-batch forward, 2048³ the machine's large-GEMM ceiling. fastckpt's
``ops.gemm`` on 1 and 2 BLAS threads, and ``torch.mm`` on 2 threads.
"""

from __future__ import annotations

import time

from bench.workloads.base import Case, Metric, median

NAME = "blas_peak"
TITLE = "BLAS peak (single GEMM, GFLOP/s)"
REFERENCE = ("fastckpt-2t",)

_FULL_SHAPES = [(32, 784, 512, False), (784, 32, 512, True), (1000, 784, 512, False),
                (2048, 2048, 2048, False)]


def _key(m, k, n):
    return f"gflops_{m}x{k}x{n}"


METRICS = [Metric(_key(m, k, n), f"{m}×{k}×{n}", "GFLOP/s", "rate") for m, k, n, _ in _FULL_SHAPES]


def config(quick: bool) -> dict:
    shapes = _FULL_SHAPES[:3] if quick else _FULL_SHAPES  # 2048³ is ~0.1 s a call: full runs only
    return {"shapes": [list(s) for s in shapes], "min_time_s": 0.05 if quick else 0.5}


def prepare(cfg, tmpdir) -> dict:
    return {}


def cases(cfg) -> list:
    return [
        Case("fastckpt-1t", "fastckpt", "bench.peers.fastckpt_peer:gemm_peak", {"threads": 1}),
        Case("fastckpt-2t", "fastckpt", "bench.peers.fastckpt_peer:gemm_peak", {"threads": 2}),
        Case("torch", "torch", "bench.peers.torch_peer:gemm_peak", note="torch.mm, 2 threads"),
    ]


def time_loop(fn, flops: float, min_time_s: float) -> float:
    """Median GFLOP/s over 5 chunks of back-to-back calls, each chunk ≥ min_time_s / 5.

    The median of chunks rather than the best: on a shared machine a lucky chunk is not the rate a
    training loop would see.
    """
    for _ in range(3):  # thread pool start-up, page faults on the output
        fn()
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < min_time_s / 5 or calls < 2:
        fn()
        calls += 1
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rates.append(flops * calls / (time.perf_counter() - t0) / 1e9)
    return median(rates)
