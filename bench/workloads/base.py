"""Vocabulary shared by the workloads, the peers and the runner.

A *workload* (one module in this package) says what is measured: its configuration (full or
``--quick``), the data it generates once, the *cases* to time (one per peer or format) and the
*metrics* each case reports. A *case* names a function ``module:function`` that runs inside a fresh
child interpreter (``bench.child``) and returns ``{metric_key: value}``.

Nothing here imports a framework: the parent process must stay light so it does not compete with
the child it is timing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

#: The framework peers ``--peers`` can select. ``baseline`` cases (raw file I/O, np.savez, h5py,
#: safetensors) are reference points like the GEMM floor and always run.
PEERS = ("fastckpt", "torch", "tf_keras", "keras3")

#: Python modules each group needs; checked with importlib.util.find_spec (no import) in the parent.
REQUIRES = {
    "fastckpt": ("fastckpt",),
    "torch": ("torch",),
    "tf_keras": ("tensorflow", "tf_keras"),
    "keras3": ("tensorflow", "keras"),
    "baseline": (),
}

#: Thread settings every child gets, whatever the peer: 2 compute threads, 1 inter-op thread.
THREADS = 2


class Unavailable(Exception):
    """Raised inside a child when a peer is installed but lacks the API a case needs.

    The runner records the message as the case's note and stops scheduling that case, so a missing
    feature (for example fastckpt's ``Sequential`` before it lands) is a row in the table, not a crash.
    """


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    #: "time": lower is better; "rate": higher is better. Ratios are always value(peer)/value(ref),
    #: so the reader needs the kind to know which direction is good.
    kind: str = "time"
    #: Multiply the raw value by this for display (seconds are shown in ms where that reads better).
    scale: float = 1.0


@dataclass
class Case:
    name: str
    group: str
    target: str
    params: Dict = field(default_factory=dict)
    requires: Sequence[str] = ()
    note: str = ""

    def missing_modules(self) -> List[str]:
        import importlib.util

        mods = tuple(REQUIRES.get(self.group, ())) + tuple(self.requires)
        return [m for m in mods if importlib.util.find_spec(m) is None]


def save_arrays(directory: str, arrays: Dict[str, np.ndarray]) -> Dict[str, str]:
    """Writes each array to ``<directory>/<name>.npy`` and returns name -> path (the children's input)."""
    paths = {}
    for name, arr in arrays.items():
        path = os.path.join(directory, f"{name}.npy")
        np.save(path, np.ascontiguousarray(arr))
        paths[name] = path
    return paths


def load_arrays(paths: Dict[str, str]) -> Dict[str, np.ndarray]:
    return {name: np.load(path) for name, path in paths.items()}


def mlp_data(rows: int, val_rows: int, pred_rows: int, features: int = 784, classes: int = 10,
             seed: int = 1234) -> Dict[str, np.ndarray]:
    """Seeded, MNIST-shaped data that is *learnable* (labels from a random linear teacher).

    Learnable on purpose: every child reports its final training accuracy, and a peer whose
    accuracy stays at chance is visibly broken even when it is fast.
    """
    rng = np.random.default_rng(seed)
    total = rows + val_rows + pred_rows
    x = rng.random((total, features), dtype=np.float32)  # pixels scaled to [0, 1) like the tutorial
    teacher = rng.standard_normal((features, classes)).astype(np.float32)
    scores = (x - 0.5) @ teacher
    y = scores.argmax(axis=1).astype(np.int32)
    return {
        "x": x[:rows], "y": y[:rows],
        "x_val": x[rows:rows + val_rows], "y_val": y[rows:rows + val_rows],
        "x_pred": x[rows + val_rows:],
    }


def mlp_gemm_flops(rows: int, layers: Sequence[int], epochs: int) -> float:
    """FLOPs of the matrix products of ``epochs`` of training on ``rows`` samples.

    ``layers`` lists the widths from input to output. Per layer: forward x·W and dW = xᵀ·dz cost
    2·in·out per sample each; dx = dz·Wᵀ as well, except for the first layer whose input needs no
    gradient.
    """
    per_sample = 0.0
    for i, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
        per_sample += 2 * a * b * (2 if i == 0 else 3)
    return per_sample * rows * epochs


def forward_flops(rows: int, layers: Sequence[int]) -> float:
    return float(sum(2 * a * b for a, b in zip(layers[:-1], layers[1:])) * rows)


def dump_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)  # a reader never sees half a results file


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON-serializable: {type(o)}")


def median(values: Sequence[float]) -> Optional[float]:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else 0.5 * (vals[mid - 1] + vals[mid])


def rss_mb() -> float:
    """Current (not peak) RSS in MiB.

    Peers record it after imports and data loading, so the report can tell the interpreter +
    framework footprint apart from what the workload itself allocates (peak RSS − this).
    """
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
