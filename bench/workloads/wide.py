"""Wide workload: Dense(2048, relu) ×3 → Dense(10) (10.5 M parameters), batch 128, no dropout.

GEMM-bound by design (≈ 57 MFLOP of products per training sample), so it shows whether a library's
training loop reaches the BLAS peak. 6 000 rows × 1 epoch in the full run: one run is ~0.34 TFLOP,
a few seconds per peer on 2 cores; throughput per sample does not depend on the row count once past
the warm-up, and 60 000 × 2 epochs would take 20× longer per run.
"""

from __future__ import annotations

from bench.workloads import large

NAME = "wide"
TITLE = "Wide: fit 1 epoch 6000×784 b128, Dense 2048×3"
REFERENCE = ("fastckpt",)
METRICS = list(large.METRICS)


def config(quick: bool) -> dict:
    return {"rows": 512 if quick else 6000, "epochs": 1, "batch_size": 128,
            "hidden": [256] * 3 if quick else [2048] * 3, "dropout": 0.0, "classes": 10,
            "features": 784, "seed": 98}


def prepare(cfg, tmpdir) -> dict:
    return large.prepare(cfg, tmpdir, name=NAME)


cases = large.cases
derive = large.derive
