"""Large workload: the tutorial's model on 60 000×784 (MNIST-sized), batch 128, 2 epochs, no
validation. Reports samples/s and the GFLOP/s the fit achieves on its matrix products, to compare
with the BLAS peak: at batch 128 the GEMMs should dominate and run near that peak.
"""

from __future__ import annotations

from bench.workloads import tutorial
from bench.workloads.base import Case, Metric, mlp_data, mlp_gemm_flops, save_arrays

NAME = "large"
TITLE = "Large: fit 2 epochs 60000×784 b128, Dense 512"
REFERENCE = ("fastckpt",)
METRICS = [
    Metric("fit_s", "fit", "s", "time"),
    Metric("samples_per_s", "fit throughput", "samples/s", "rate"),
    Metric("gemm_gflops", "fit GEMM rate", "GFLOP/s", "rate"),
]


def config(quick: bool) -> dict:
    return {"rows": 1024 if quick else 60000, "epochs": 1 if quick else 2, "batch_size": 128,
            "hidden": [512], "dropout": 0.2, "classes": 10, "features": 784, "seed": 99}


def prepare(cfg, tmpdir, name=NAME) -> dict:
    arrays = mlp_data(cfg["rows"], 0, 0, cfg["features"], cfg["classes"], cfg["seed"])
    paths = save_arrays(tmpdir, {f"{name}_{k}": arrays[k] for k in ("x", "y")})
    return {k: paths[f"{name}_{k}"] for k in ("x", "y")}


def cases(cfg) -> list:
    return [Case(name=p, group=p, target=t) for p, t in tutorial.PEER_TARGETS.items()]


def derive(cfg, metrics: dict) -> dict:
    """Adds the achieved GEMM rate: the fit's matrix-product FLOPs over its wall time."""
    if metrics.get("fit_s"):
        widths = [cfg["features"], *cfg["hidden"], cfg["classes"]]
        metrics["gemm_gflops"] = mlp_gemm_flops(cfg["rows"], widths, cfg["epochs"]) / metrics["fit_s"] / 1e9
    return metrics
