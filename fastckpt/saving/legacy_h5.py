"""Keras' legacy HDF5 weight layout (``model.save_weights('w.h5')``), via h5py.

Layout, as tf.keras and Keras 3 read it: a string-array attribute ``layer_names`` listing every
layer; one group per layer with a ``weight_names`` attribute; each weight a dataset at
``<layer>/<weight name>`` (``dense/dense/kernel:0``). A full-model file keeps the same tree under
``model_weights`` beside the root attributes ``model_config`` / ``training_config`` (JSON) and an
``optimizer_weights`` group (``iteration:0``, then Adam's ``m``/``v`` per trainable variable: the
tf_keras order, which tf_keras restores). Files are written through ``checkpoint.locking.atomic_file``
(writer lock, dead temps swept, renamed into place). Every load opens the file with
``limits.open_h5``, which checks the whole tree before a value is read: nothing from the file is
executed, nothing outside it is read, and hostile files raise typed errors.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from fastckpt.checkpoint.locking import atomic_file
from fastckpt.errors import CheckpointMismatchError, CorruptCheckpointError, UnsafeFileError
from fastckpt.saving import limits
from fastckpt.saving.compile_config import compile_from_config, compile_to_config
from fastckpt.saving.model_config import model_from_config, model_to_config

__all__ = ["save_weights_to_group", "load_weights_from_group", "load_weights_from_tree",
           "save_weights_h5", "load_weights_h5", "KERAS_VERSION", "atomic_h5", "save_model_h5", "load_model_h5",
           "restore_optimizer_state"]

KERAS_VERSION = "2.21.0"  # the tf_keras release whose layout we write
MAX_NAMES = 100_000


def _strs(values) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype="S") if values else np.array([], "S1")


def _names(obj, key: str, path: str) -> List[str]:
    return limits.read_str_list_attr(obj, key, path, limit=MAX_NAMES)


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


def _read_layer_weights(tree, group, layer_name: str, path: str) -> List[np.ndarray]:
    if layer_name not in group:
        raise CorruptCheckpointError(f"{path}: layer group {layer_name!r} listed in layer_names is "
                                     f"missing", path=path)
    g = group[layer_name]
    names = _names(g, "weight_names", path)
    out = []
    for n in names:
        if n not in g:
            raise CorruptCheckpointError(f"{path}: weight {layer_name}/{n} is listed but missing",
                                         path=path, tensor=n)
        out.append(tree.read(g[n]))
    return out


def load_weights_from_group(tree, group, model, by_name: bool = False, skip_mismatch: bool = False,
                            path: str = "<h5>") -> None:
    """Assign the weights stored in ``group`` (of the checked file ``tree``, see
    ``limits.open_h5``) to ``model``; all checks pass before any assignment."""
    names = _names(group, "layer_names", path)
    saved: Dict[str, List[np.ndarray]] = {n: _read_layer_weights(tree, group, n, path) for n in names}
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


_ERRNO = re.compile(r"errno = (\d+)")


def _write_error(e: BaseException, path: str) -> Optional[OSError]:
    """h5py reports a failed write (disk full, file too large) as RuntimeError or OSError with the
    errno only in its message; give it back as ``OSError(errno, strerror, path)``."""
    if isinstance(e, OSError) and e.errno is not None:
        return OSError(e.errno, e.strerror, path) if e.filename is None else None
    m = _ERRNO.search(str(e)) if isinstance(e, (OSError, RuntimeError)) else None
    if m is None or not int(m.group(1)):
        return None
    code = int(m.group(1))
    return OSError(code, f"{os.strerror(code)} (HDF5: {e})", path)


@contextmanager
def atomic_h5(path: str, fsync: bool = True) -> Iterator[Any]:
    """``with atomic_h5(path) as f:`` builds an HDF5 file and puts it at ``path`` atomically,
    through ``checkpoint.locking.atomic_file``: the directory's writer lock is held throughout,
    dead temps of ``path`` are swept first, a directory in the way is refused before anything is
    written, and on any failure the previous file is untouched and the temp removed.

    The file is built in memory and written with plain ``write`` calls, so a full disk or a file
    size limit is an ``OSError`` with its errno and ``path`` (HDF5 itself reports a failed write
    as an untyped ``RuntimeError`` when the file is closed, and h5py can crash after one)."""
    import h5py
    path = os.fspath(path)
    try:
        with atomic_file(path, fsync=fsync) as tmp:
            buf = io.BytesIO()
            with h5py.File(buf, "w") as f:
                yield f
            with open(tmp, "xb") as out:
                out.write(buf.getbuffer())
    except (OSError, RuntimeError) as e:
        converted = _write_error(e, path)
        if converted is None:
            raise
        raise converted from e


def save_weights_h5(model, path: str, fsync: bool = True) -> None:
    with atomic_h5(path, fsync=fsync) as f:
        save_weights_to_group(f, model)


def load_weights_h5(model, path: str, by_name: bool = False, skip_mismatch: bool = False) -> None:
    path = os.fspath(path)
    with limits.open_h5(path) as tree, limits.h5_errors(path):
        load_weights_from_tree(tree, model, by_name=by_name, skip_mismatch=skip_mismatch)


def load_weights_from_tree(tree, model, by_name: bool = False, skip_mismatch: bool = False) -> None:
    """``load_weights`` from a checked tf_keras-layout file (weights-only, or a whole model's)."""
    f, path = tree.file, tree.where
    group = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
    if "layer_names" not in group.attrs:
        raise CorruptCheckpointError(f"{path}: no 'layer_names' attribute: not a Keras weights file",
                                     path=path)
    load_weights_from_group(tree, group, model, by_name=by_name, skip_mismatch=skip_mismatch,
                            path=path)


# --- whole models -----------------------------------------------------------------------------
def _optimizer_weight_names(optimizer) -> List[str]:
    # tf_keras calls the step counter "iteration:0"; slots are "<optimizer>/<slot>/<variable>:0"
    # ("Adam/m/dense/kernel:0"). Loaders go by position, so the names are for people.
    return ["iteration:0"] + [v.name for v in optimizer.variables[1:]]


def save_model_h5(model, path: str, include_optimizer: bool = True, fsync: bool = True) -> None:
    """``model.save('m.h5')``: architecture, weights, compile config and optimizer state in the
    tf_keras 2.x layout, which ``tf_keras`` and Keras 3 ``load_model`` both read."""
    import json


    if not model.built:
        raise ValueError(f"Model {model.name!r} has not been built, so it has no weights to save. "
                         f"Call it on data or give the first layer an input_shape first.")
    model_config = json.dumps(model_to_config(model))
    training_config = compile_to_config(model, dialect="tf_keras")
    with atomic_h5(path, fsync=fsync) as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = KERAS_VERSION
        f.attrs["model_config"] = model_config
        # fastckpt's own: dropout and shuffle counters, so training resumes bit for bit.
        f.attrs["fastckpt_rng_state"] = json.dumps(model._get_rng_state())
        if training_config is not None:
            f.attrs["training_config"] = json.dumps(training_config)
        save_weights_to_group(f.create_group("model_weights"), model)
        opt = model.optimizer
        if include_optimizer and opt is not None and training_config is not None:
            names = _optimizer_weight_names(opt)
            variables = opt.variables
            if len(names) != len(variables):  # a subclass with its own layout: do not guess
                warnings.warn(f"Optimizer {type(opt).__name__}: {len(variables)} variables but "
                              f"{len(names)} names; its state is not saved")
                return
            g = f.create_group("optimizer_weights")
            g.attrs["weight_names"] = _strs(names)
            for name, var in zip(names, variables):
                g.create_dataset(name, data=var.value)


def restore_optimizer_state(model, arrays: List[np.ndarray], source: str) -> bool:
    """Assign saved optimizer variables to ``model.optimizer`` after building it on the model.

    Accepts tf_keras' layout (``iterations``, then slots) and Keras 3's (``iterations``,
    ``learning_rate``, then slots). All or nothing: on any mismatch nothing is assigned and a
    warning says why, as Keras does (the model itself is still fully loaded).
    """
    opt = model.optimizer
    opt.build(model.trainable_weights)
    live = opt.variables
    arrays = list(arrays)
    lr = None
    k3 = opt._keras3_variables() if hasattr(opt, "_keras3_variables") else live
    if len(k3) != len(live):  # Keras 3's own layout differs for this optimizer
        if len(arrays) == len(k3) + 1 and len(arrays) >= 2 and np.ndim(arrays[1]) == 0:
            lr, arrays, live = arrays[1], [arrays[0]] + arrays[2:], k3
        elif len(arrays) == len(k3):  # no rate variable: a schedule
            live = k3
    # Keras 3 puts the learning rate second; tell the layouts apart by count, then by shape.
    if len(arrays) != len(live) and len(arrays) >= 2 and np.ndim(arrays[1]) == 0 and (
            len(arrays) == len(live) + 1 or len(arrays) == 2):
        lr, arrays = arrays[1], [arrays[0]] + arrays[2:]
    problems = []
    if len(arrays) == 1 and len(live) > 1 and np.ndim(arrays[0]) == 0 and int(arrays[0]) == 0:
        arrays = [arrays[0]] + [np.zeros(v.shape, v.dtype) for v in live[1:]]  # saved unbuilt
    if len(arrays) != len(live):
        problems.append(f"expected {len(live)} arrays (iterations + slots), found {len(arrays)}")
    else:
        for i, (var, arr) in enumerate(zip(live, arrays)):
            if np.shape(arr) != var.shape:
                problems.append(f"variable {i} ({var.name}): expected shape {var.shape}, found "
                                f"{np.shape(arr)}")
    if problems:
        warnings.warn(f"{source}: optimizer state not restored: " + "; ".join(problems[:5]))
        return False
    for var, arr in zip(live, arrays):
        var.assign(np.asarray(arr).astype(var.dtype, copy=False))
    # A schedule's rate follows iterations (and may not be assigned, as in tf_keras).
    if (lr is not None and np.isfinite(lr) and float(lr) > 0
            and getattr(opt, "_schedule", None) is None):
        opt.learning_rate = float(lr)
    return True


@contextmanager
def _naming(path: str, what: str) -> Iterator[None]:
    """Errors about a file's content raised by code that does not know the file get its name."""
    try:
        yield
    except (CorruptCheckpointError, UnsafeFileError) as e:
        if str(e).startswith(path):
            raise
        if isinstance(e, CorruptCheckpointError):
            raise CorruptCheckpointError(f"{path}: {what}: {e}", path=path) from None
        raise UnsafeFileError(f"{path}: {what}: {e}") from None


def model_from_file_config(config, path: str, what: str, **kwargs):
    """``model_from_config`` with errors that name the file they came from."""
    with _naming(path, what):
        return model_from_config(config, **kwargs)


def load_model_h5(path: str, custom_objects: Optional[Dict[str, Any]] = None,
                  compile: bool = True):
    """``load_model('m.h5')`` for files written by fastckpt, tf_keras 2.x or Keras 3.

    Restores the architecture, the weights, the compile configuration (if ``compile``) and the
    optimizer's iterations and slots where the file has them.
    """
    path = os.fspath(path)
    with limits.open_h5(path) as tree, limits.h5_errors(path):
        f = tree.file
        raw = limits.read_str_attr(f, "model_config", path)
        if raw is None:
            raise CorruptCheckpointError(f"{path}: no 'model_config' attribute: this is a "
                                         f"weights-only file; build the model and call "
                                         f"load_weights instead", path=path)
        config = limits.load_json(raw, f"{path}: model_config", path=path)
        # A config may not ask for more weights than the file could possibly hold.
        max_params = max(tree.size, 2**20)
        model = model_from_file_config(config, path, "model_config", custom_objects=custom_objects,
                                       max_params=max_params)
        if not model.built:
            raise CorruptCheckpointError(f"{path}: the model config does not give an input shape "
                                         f"(no InputLayer, batch_input_shape or build_input_shape)",
                                         path=path)
        group = f["model_weights"] if "model_weights" in f else None
        if group is None or "layer_names" not in group.attrs:
            raise CorruptCheckpointError(f"{path}: no 'model_weights' group with 'layer_names'",
                                         path=path)
        load_weights_from_group(tree, group, model, path=path)
        rng = limits.read_str_attr(f, "fastckpt_rng_state", path)
        if rng is not None:
            with _naming(path, "fastckpt_rng_state"):
                model._set_rng_state(
                    limits.load_json(rng, f"{path}: fastckpt_rng_state", path=path))
        raw = limits.read_str_attr(f, "training_config", path) if compile else None
        if raw is None:
            return model
        training = limits.load_json(raw, f"{path}: training_config", path=path)
        with _naming(path, "training_config"):
            kwargs = compile_from_config(training, custom_objects=custom_objects)
        model.compile(**kwargs)
        if "optimizer_weights" in f:
            og = f["optimizer_weights"]
            names = _names(og, "weight_names", path)
            arrays = []
            for n in names:
                if n not in og:
                    raise CorruptCheckpointError(f"{path}: optimizer weight {n!r} is listed but "
                                                 f"missing", path=path, tensor=n)
                arrays.append(tree.read(og[n]))
            restore_optimizer_state(model, arrays, path)
    return model
