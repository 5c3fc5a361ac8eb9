"""Tabular workload (issue 13): a Functional model with two categorical inputs.

Inputs: 8 float features (unnormalized, scales from 0.01 to 100, as raw tabular columns are) and two
int32 categorical columns of shape (1,) with skewed ids (vocabularies 1000 and 100). Model:
``Embedding(1000, 8)`` and ``Embedding(100, 4)`` each → ``Flatten`` → ``Concatenate`` with the
numeric features → ``BatchNormalization`` → Dense 256 relu → Dense 256 relu → Dense 2, Adam,
sparse categorical cross-entropy from logits, accuracy metric; ``fit`` 3 epochs on 20 000 rows
(batch 128, shuffled, no validation), then ``predict`` on all 20 000 rows (batch 128). Same warm-up
as the tutorial (a 1-epoch fit and a predict on two batches plus the remainder, untimed).

tf.keras, Keras 3 and fastckpt run one Functional-API function (``bench.peers.breadth_models``);
PyTorch runs the same network as an ``nn.Module`` with Keras' initializers and BatchNorm settings.
"""

from __future__ import annotations

import numpy as np

from bench.workloads.base import Case, Metric, save_arrays

NAME = "tabular"
TITLE = "Tabular (Functional): 8 numeric + 2 Embeddings → BN → Dense 256×2 → 2, fit 3 epochs 20000 b128"
REFERENCE = ("fastckpt",)
METRICS = [
    Metric("samples_per_s", "fit throughput", "samples/s", "rate"),
    Metric("fit_s", "fit", "s", "time"),
    Metric("predict_s", "predict all rows", "ms", "time", 1e3),
]

PEER_TARGETS = {
    "fastckpt": "bench.peers.breadth_models:fastckpt_tabular",
    "torch": "bench.peers.breadth_models:torch_tabular",
    "tf_keras": "bench.peers.breadth_models:tf_keras_tabular",
    "keras3": "bench.peers.breadth_models:keras3_tabular",
}


def config(quick: bool) -> dict:
    return {"rows": 512 if quick else 20000, "epochs": 1 if quick else 3, "batch_size": 128,
            "numeric": 8, "vocab": [1000, 100], "embed_dim": [8, 4], "hidden": [256, 256],
            "classes": 2, "seed": 4242}


def tabular_data(cfg) -> dict:
    """Seeded rows with a learnable teacher: a linear score of the standardized numeric columns plus
    one random score per category id, arg-maxed over the classes (as ``mlp_data``)."""
    rng = np.random.default_rng(cfg["seed"])
    n, f, k = cfg["rows"], cfg["numeric"], cfg["classes"]
    scale = np.logspace(-2, 2, f).astype(np.float32)
    offset = rng.standard_normal(f).astype(np.float32) * scale
    z = rng.standard_normal((n, f)).astype(np.float32)
    num = (z * scale + offset).astype(np.float32)
    scores = z @ rng.standard_normal((f, k)).astype(np.float32)
    out = {"num": num}
    for i, vocab in enumerate(cfg["vocab"]):
        # Skewed ids (low ids frequent), as real categorical columns are; every id can occur.
        ids = np.minimum((vocab * rng.random(n) ** 2).astype(np.int32), vocab - 1)
        out[f"cat{i + 1}"] = ids.reshape(n, 1)
        scores += rng.standard_normal((vocab, k)).astype(np.float32)[ids]
    out["y"] = scores.argmax(axis=1).astype(np.int32)
    return out


def prepare(cfg, tmpdir) -> dict:
    arrays = tabular_data(cfg)
    paths = save_arrays(tmpdir, {f"{NAME}_{k}": v for k, v in arrays.items()})
    return {k: paths[f"{NAME}_{k}"] for k in arrays}


def cases(cfg) -> list:
    return [Case(name=peer, group=peer, target=t) for peer, t in PEER_TARGETS.items()]
