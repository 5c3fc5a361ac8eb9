"""The tutorial workload: ``fit`` 10 epochs on 1000×784 (batch 32) with validation on 1000 held-out
rows, then ``predict`` on 1000.

Model: Dense(512, relu) → Dropout(0.2) → Dense(10), Adam, sparse categorical cross-entropy from
logits, accuracy metric. ``fit`` and ``predict`` (median of 5 calls; PyTorch both as a batch-32 loop
and as one call on all rows) are timed separately with verbose=0, after a
warm-up fit/predict on a slice (two batches plus the remainder) of the same model, so first-call
tracing/compilation is excluded for every peer. Two extra rows time the same fit with the
tutorial's ``ModelCheckpoint(save_weights_only=True)`` saving every epoch (fastckpt and tf.keras).
"""

from __future__ import annotations

from bench.workloads.base import Case, Metric, mlp_data, save_arrays

NAME = "tutorial"
TITLE = "Tutorial: fit 10 epochs 1000×784 b32 + val 1000, predict 1000"
REFERENCE = ("fastckpt",)
METRICS = [
    Metric("fit_s", "fit", "s", "time"),
    Metric("predict_s", "predict", "ms", "time", 1e3),
    # PyTorch only: model(x) on all rows in one call (what its users write); predict_s is its
    # batch-32 loop (Keras' predict semantics).
    Metric("predict_one_s", "predict, one call", "ms", "time", 1e3),
    Metric("predict_gflops", "predict rate", "GFLOP/s", "rate"),
]

PEER_TARGETS = {
    "fastckpt": "bench.peers.fastckpt_peer:mlp",
    "torch": "bench.peers.torch_peer:mlp",
    "tf_keras": "bench.peers.tf_keras_peer:mlp",
    "keras3": "bench.peers.keras3_peer:mlp",
}


def config(quick: bool) -> dict:
    n = 128 if quick else 1000
    return {"rows": n, "val_rows": n, "pred_rows": n, "epochs": 1 if quick else 10,
            "batch_size": 32, "hidden": [512], "dropout": 0.2, "classes": 10, "features": 784,
            "seed": 1234}


def prepare(cfg, tmpdir) -> dict:
    arrays = mlp_data(cfg["rows"], cfg["val_rows"], cfg["pred_rows"], cfg["features"],
                      cfg["classes"], cfg["seed"])
    paths = save_arrays(tmpdir, {f"{NAME}_{k}": v for k, v in arrays.items()})
    return {k: paths[f"{NAME}_{k}"] for k in arrays}


def cases(cfg) -> list:
    out = [Case(name=peer, group=peer, target=t) for peer, t in PEER_TARGETS.items()]
    # The tutorial's ModelCheckpoint(save_weights_only=True) every epoch, to one TF-format prefix:
    # its cost is this row over the plain one. Keras 3 cannot write that format (it wants
    # .weights.h5), and PyTorch has no such callback, so only these two.
    for peer in ("fastckpt", "tf_keras"):
        out.append(Case(name=f"{peer}+ModelCheckpoint", group=peer, target=PEER_TARGETS[peer],
                        params={"model_checkpoint": True}))
    return out
