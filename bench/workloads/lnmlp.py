"""LayerNorm + GELU MLP workload (issue 13).

Model: Dense 512 → LayerNormalization → GELU (exact) → Dropout 0.1 → Dense 512 →
LayerNormalization → GELU → Dense 10, Adam, sparse categorical cross-entropy from logits, accuracy
metric; ``fit`` 3 epochs on 20 000 × 256 float32 rows (batch 128, shuffled, no validation), then
``predict`` on all 20 000 rows (batch 128). Data as the tutorial's (uniform [0, 1), labels from a
random linear teacher). The Keras-API peers build it as a ``Sequential`` of those layers (one shared
function, ``bench.peers.breadth_models``); PyTorch as ``nn.Sequential`` with LayerNorm ε = 1e-3
(Keras' default) and ``nn.GELU()`` (exact).
"""

from __future__ import annotations

from bench.workloads.base import Case, Metric, mlp_data, save_arrays
from bench.workloads.tabular import METRICS  # noqa: F401  (same metrics)

NAME = "lnmlp"
TITLE = "LN-GELU MLP: 256 → (Dense 512, LayerNorm, GELU)×2 → 10, fit 3 epochs 20000 b128"
REFERENCE = ("fastckpt",)

PEER_TARGETS = {
    "fastckpt": "bench.peers.breadth_models:fastckpt_lnmlp",
    "torch": "bench.peers.breadth_models:torch_lnmlp",
    "tf_keras": "bench.peers.breadth_models:tf_keras_lnmlp",
    "keras3": "bench.peers.breadth_models:keras3_lnmlp",
}


def config(quick: bool) -> dict:
    return {"rows": 512 if quick else 20000, "epochs": 1 if quick else 3, "batch_size": 128,
            "features": 256, "hidden": [512, 512], "dropout": 0.1, "classes": 10, "seed": 5151}


def prepare(cfg, tmpdir) -> dict:
    arrays = mlp_data(cfg["rows"], 0, 0, cfg["features"], cfg["classes"], cfg["seed"])
    paths = save_arrays(tmpdir, {f"{NAME}_{k}": arrays[k] for k in ("x", "y")})
    return {k: paths[f"{NAME}_{k}"] for k in ("x", "y")}


def cases(cfg) -> list:
    return [Case(name=peer, group=peer, target=t) for peer, t in PEER_TARGETS.items()]
