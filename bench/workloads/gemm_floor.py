"""GEMM-only floor: exactly the matrix products of the tutorial's fit (training steps + validation
forwards, every epoch) and of its predict, in the same order and shapes, and nothing else.

Per training batch of b rows (31 of 32 and one of 8 for 1000 rows): forward x·W1 (b×784·784×512)
and h·W2 (b×512·512×10); backward dW2 = hᵀ·dz2, dh = dz2·W2ᵀ, dW1 = xᵀ·dz1 (no dx for the first
layer). Validation and predict: the two forward products per batch of 32. Timed with fastckpt's
``ops.gemm`` and with ``torch.mm``, both through Python, so the floor includes a few µs of call
overhead per product (≈ 2 300 products per fit).
"""

from __future__ import annotations

from bench.workloads import tutorial
from bench.workloads.base import Case, Metric

NAME = "gemm_floor"
TITLE = "GEMM-only floor of the tutorial's fit and predict"
REFERENCE = ("fastckpt",)
METRICS = [
    Metric("fit_s", "fit GEMMs", "s", "time"),
    Metric("predict_s", "predict GEMMs", "ms", "time", 1e3),
    Metric("fit_gflops", "fit GEMM rate", "GFLOP/s", "rate"),
]


def config(quick: bool) -> dict:
    return tutorial.config(quick)  # same shapes as the tutorial, by construction


def prepare(cfg, tmpdir) -> dict:
    return {}  # operands are random buffers allocated in the child: values do not change GEMM time


def _batches(rows, bs):
    return [min(bs, rows - i) for i in range(0, rows, bs)]


def _forward(b, widths):
    return [(b, a, c, False, False) for a, c in zip(widths[:-1], widths[1:])]


def _backward(b, widths):
    calls = []
    pairs = list(zip(widths[:-1], widths[1:]))
    for i in range(len(pairs) - 1, -1, -1):
        a, c = pairs[i]
        calls.append((a, b, c, True, False))  # dW = inputᵀ · dz   (a×b · b×c)
        if i > 0:
            calls.append((b, c, a, False, True))  # dx = dz · Wᵀ   (b×c · c×a)
    return calls


def schedule(cfg) -> dict:
    """Ordered (m, k, n, trans_a, trans_b) products per phase: ``fit`` and ``predict``."""
    widths = [cfg["features"], *cfg["hidden"], cfg["classes"]]
    bs = cfg["batch_size"]
    fit = []
    for _ in range(cfg["epochs"]):
        for b in _batches(cfg["rows"], bs):
            fit += _forward(b, widths) + _backward(b, widths)
        for b in _batches(cfg["val_rows"], bs):
            fit += _forward(b, widths)
    pred = [c for b in _batches(cfg["pred_rows"], bs) for c in _forward(b, widths)]
    return {"fit": fit, "predict": pred}


def flops(calls) -> float:
    return float(sum(2 * m * k * n for m, k, n, _a, _b in calls))


def derive(cfg, metrics: dict) -> dict:
    if metrics.get("fit_s"):
        metrics["fit_gflops"] = flops(schedule(cfg)["fit"]) / metrics["fit_s"] / 1e9
    return metrics


def cases(cfg) -> list:
    return [
        Case("fastckpt", "fastckpt", "bench.peers.fastckpt_peer:gemm_floor", note="fastckpt.ops.gemm"),
        Case("torch", "torch", "bench.peers.torch_peer:gemm_floor", note="torch.mm"),
    ]
