"""Keras' legacy HDF5 weight layout (``model.save_weights('w.h5')``), via h5py.

Layout, as tf.keras and Keras 3 read it: a string-array attribute ``layer_names`` listing every
layer; one group per layer with a ``weight_names`` attribute; each weight a dataset at
``<layer>/<weight name>`` (``dense/dense/kernel:0``). A full-model file keeps the same tree under
``model_weights``. Files are written beside the target and renamed into place.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Dict, List

import numpy as np

from fastckpt.errors import CheckpointMismatchError, CorruptCheckpointError

__all__ = ["save_weights_to_group", "load_weights_from_group", "save_weights_h5",
           "load_weights_h5", "KERAS_VERSION", "atomic_h5"]

KERAS_VERSION = "2.21.0"  # the tf_keras release whose layout we write
MAX_NAMES = 100_000


def _strs(values) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype="S") if values else np.array([], "S1")


def _decode_list(attr, what: str, path: str) -> List[str]:
    arr = np.asarray(attr)
    if arr.ndim > 1 or arr.size > MAX_NAMES:
        raise CorruptCheckpointError(f"{path}: attribute {what} has shape {arr.shape}", path=path)
    out = []
    for v in arr.reshape(-1):
        if isinstance(v, (bytes, np.bytes_)):
            out.append(bytes(v).decode("utf-8"))
        elif isinstance(v, str):
            out.append(v)
        else:
            raise CorruptCheckpointError(f"{path}: attribute {what} holds {type(v).__name__}, "
                                         f"expected strings", path=path)
    return out


def save_weights_to_group(group, model) -> None:
    group.attrs["layer_names"] = _strs([layer.name for layer in model.layers])
    group.attrs["backend"] = "tensorflow"
    group.attrs["keras_version"] = KERAS_VERSION
    for layer in model.layers:
        g = group.create_group(layer.name)
        names = [w.name for w in layer.weights]
        g.attrs["weight_names"] = _strs(names)
        for name, w in zip(names, layer.weights):
            g.create_dataset(name, data=w.value)


def _read_layer_weights(group, layer_name: str, path: str) -> List[np.ndarray]:
    if layer_name not in group:
        raise CorruptCheckpointError(f"{path}: layer group {layer_name!r} listed in layer_names is "
                                     f"missing", path=path)
    g = group[layer_name]
    names = _decode_list(g.attrs.get("weight_names", []), "weight_names", path)
    out = []
    for n in names:
        if n not in g:
            raise CorruptCheckpointError(f"{path}: weight {layer_name}/{n} is listed but missing",
                                         path=path, tensor=n)
        ds = g[n]
        if not hasattr(ds, "shape") or not hasattr(ds, "dtype"):
            raise CorruptCheckpointError(f"{path}: {layer_name}/{n} is not a dataset", path=path, tensor=n)
        if ds.dtype.kind not in "fiub":
            raise CorruptCheckpointError(f"{path}: {layer_name}/{n} has non-numeric dtype {ds.dtype}",
                                         path=path, tensor=n)
        out.append(ds[()])
    return out


def load_weights_from_group(group, model, by_name: bool = False, skip_mismatch: bool = False,
                            path: str = "<h5>") -> None:
    """Assign the weights stored in ``group`` to ``model``; all checks pass before any assignment."""
    names = _decode_list(group.attrs.get("layer_names", []), "layer_names", path)
    saved: Dict[str, List[np.ndarray]] = {n: _read_layer_weights(group, n, path) for n in names}
    layers = model.layers
    plan = []
    problems = []
    if by_name:
        for layer in layers:
            if layer.name in saved:
                plan.append((layer, saved[layer.name]))
    else:
        saved_with = [(n, w) for n, w in saved.items() if w]
        live_with = [layer for layer in layers if layer.weights]
        if len(saved_with) != len(live_with):
            raise CheckpointMismatchError(
                f"{path}: layer count mismatch when loading weights: the model has "
                f"{len(live_with)} layers with weights ({[la.name for la in live_with]}), the file "
                f"has {len(saved_with)} ({[n for n, _ in saved_with]})")
        plan = [(layer, w) for layer, (_, w) in zip(live_with, saved_with)]
    final = []
    for layer, weights in plan:
        if len(weights) != len(layer.weights):
            problems.append(f"layer {layer.name}: expected {len(layer.weights)} weights, found {len(weights)}")
            continue
        good = True
        for var, value in zip(layer.weights, weights):
            if value.shape != var.shape:
                msg = f"{var.name}: expected shape {var.shape}, found {value.shape}"
                if skip_mismatch:
                    warnings.warn(f"Skipping loading weights for layer {layer.name}: {msg}")
                    good = False
                    break
                problems.append(msg)
        if good:
            final.append((layer, weights))
    if problems:
        raise CheckpointMismatchError(f"{path} does not match the model: " + "; ".join(problems))
    for layer, weights in final:
        for var, value in zip(layer.weights, weights):
            var.assign(value.astype(var.dtype, copy=False))


class atomic_h5:
    """``with atomic_h5(path) as f:`` writes an HDF5 file beside ``path`` and renames it into
    place on success; on failure the previous file is untouched."""

    def __init__(self, path: str, fsync: bool = True):
        self.path = os.fspath(path)
        self.fsync = fsync

    def __enter__(self):
        import h5py
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".", suffix=".tmp",
                                        dir=directory)
        os.close(fd)
        self.file = h5py.File(self.tmp, "w")
        return self.file

    def __exit__(self, exc_type, exc, tb):
        try:
            self.file.close()
            if exc_type is None:
                if self.fsync:
                    with open(self.tmp, "rb") as f:
                        os.fsync(f.fileno())
                os.replace(self.tmp, self.path)
                if self.fsync:
                    dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
        return False


def save_weights_h5(model, path: str, fsync: bool = True) -> None:
    with atomic_h5(path, fsync=fsync) as f:
        save_weights_to_group(f, model)


def load_weights_h5(model, path: str, by_name: bool = False, skip_mismatch: bool = False) -> None:
    import h5py
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        from fastckpt.errors import CheckpointNotFoundError
        raise CheckpointNotFoundError(f"No such HDF5 file: {path}") from None
    except OSError as e:
        raise CorruptCheckpointError(f"{path}: not a readable HDF5 file ({e})", path=path) from None
    with f:
        group = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
        if "layer_names" not in group.attrs:
            raise CorruptCheckpointError(f"{path}: no 'layer_names' attribute: not a Keras weights file",
                                         path=path)
        load_weights_from_group(group, model, by_name=by_name, skip_mismatch=skip_mismatch, path=path)
