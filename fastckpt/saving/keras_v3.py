"""Keras 3's native formats: ``.weights.h5`` and the ``.keras`` archive.

``.weights.h5`` is an HDF5 tree keyed by object path, not by layer name:
``layers/<snake_case class name, made unique>/vars/<i>`` for each layer's variables (trainable
first), ``optimizer/vars/<i>`` for the optimizer (``iteration``, ``learning_rate``, then each
slot per trainable variable) and an empty root ``vars``. Weightless layers still get an empty
``vars`` group: tf_keras refuses the file without them.

``.keras`` is a ZIP of ``metadata.json``, ``config.json`` (the Keras 3 model config plus
``compile_config``) and ``model.weights.h5`` with that tree. Both files are written through
``checkpoint.locking.atomic_file`` (writer lock, dead temps swept, renamed into place). Loading
checks the archive (end record before the central directory is parsed, then member names, count,
sizes, compression) and opens every HDF5 tree through ``limits.open_h5`` (links, storage,
declared vs stored sizes) before reading values.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
import warnings
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from fastckpt import backend
from fastckpt.checkpoint.locking import atomic_file
from fastckpt.errors import CheckpointMismatchError, CorruptCheckpointError, UnsafeFileError
from fastckpt.saving import limits
from fastckpt.saving.legacy_h5 import (_naming, atomic_h5, model_from_file_config,
                                       restore_optimizer_state)
from fastckpt import optimizers
from fastckpt.saving.compile_config import compile_from_config, compile_to_config
from fastckpt.saving.model_config import model_to_keras3_config
from fastckpt.version import VERSION

__all__ = ["save_weights_keras3", "load_weights_keras3", "save_model_keras", "load_model_keras",
           "is_keras3_weights_file", "is_keras3_layout", "load_weights_from_tree", "KERAS3_VERSION"]

KERAS3_VERSION = "3.15.1"  # the Keras release whose layout we write
_CONFIG = "config.json"
_METADATA = "metadata.json"
_WEIGHTS = "model.weights.h5"
_COPY_CHUNK = 2**20


# --- the object tree ------------------------------------------------------------------------------
def _layer_paths(model) -> List[Tuple[str, Any]]:
    """Keras 3 names each layer by its class (``dense``, ``dropout``, ``dense_1``), not its name."""
    seen: Dict[str, int] = {}
    out = []
    for layer in model.layers:
        base = backend.to_snake_case(type(layer).__name__)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append((base if n == 0 else f"{base}_{n}", layer))
    return out


def _layer_vars(layer) -> list:
    # Keras 3 saves a layer's trainable variables first, then the non-trainable ones.
    ws = layer.weights
    return [w for w in ws if w.trainable] + [w for w in ws if not w.trainable]


def _is_model(layer) -> bool:
    return hasattr(layer, "_trainer") and hasattr(layer, "layers")


def _write_layers(group, model) -> None:
    """``layers/<key>/vars/<i>`` per layer; a nested model gets ``layers/<key>/layers/...`` and
    an empty ``vars`` of its own, as Keras 3 writes it."""
    layers = group.create_group("layers")
    for key, layer in _layer_paths(model):
        lg = layers.create_group(key)
        if _is_model(layer):
            _write_layers(lg, layer)
            lg.create_group("vars").attrs["name"] = layer.name
            continue
        g = lg.create_group("vars")
        g.attrs["name"] = layer.name
        for i, var in enumerate(_layer_vars(layer)):
            g.create_dataset(str(i), data=var.value)


def _write_tree(f, model, include_optimizer: bool) -> None:
    _write_layers(f, model)
    opt = model.optimizer if include_optimizer else None
    if opt is not None and getattr(model, "loss", None) is not None:
        g = f.create_group("optimizer").create_group("vars")
        g.attrs["name"] = opt.name
        # Keras 3's layout (optimizers/optimizer.py); it keeps no rate variable for a schedule.
        variables = opt._keras3_variables()
        lr = [] if getattr(opt, "_schedule", None) is not None else [np.float32(opt.learning_rate)]
        values = [variables[0].value] + lr + [v.value for v in variables[1:]]
        for i, value in enumerate(values):
            g.create_dataset(str(i), data=value)
    f.create_group("vars").attrs["name"] = model.name


def _read_array(tree, ds) -> np.ndarray:
    value = tree.read(ds)
    if ds.attrs.get("dtype") in ("bfloat16", b"bfloat16") and value.dtype == np.uint16:
        # bfloat16 is the upper half of a float32.
        value = (value.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(value)


def _vars_of(tree, group, where: str, key: str) -> List[np.ndarray]:
    if group is None:
        return []
    names = list(group.keys())
    want = [str(i) for i in range(len(names))]
    if sorted(names) != sorted(want):
        raise CorruptCheckpointError(f"{where}: {key}/vars should hold datasets 0..N-1, found "
                                     f"{sorted(names)[:10]}", path=where)
    out = []
    for n in want:
        out.append(_read_array(tree, group[n]))
    return out


def _plan_layers(tree, group, model, prefix: str, plan, problems, skip_mismatch: bool,
                 depth: int = 0) -> None:
    where = tree.where
    layers = group.get("layers") if hasattr(group, "get") else None
    if layers is None or not hasattr(layers, "keys"):
        problems.append(f"no {prefix}layers group for model {model.name!r}")
        return
    if depth > 32:
        raise CorruptCheckpointError(f"{where}: models nested more than 32 deep", path=where)
    expected = _layer_paths(model)
    known = {key for key, _ in expected}
    for key in layers.keys():
        sub = layers[key]
        vars_group = sub.get("vars") if hasattr(sub, "get") else None
        nested = sub.get("layers") if hasattr(sub, "get") else None
        if key not in known and ((vars_group is not None and len(vars_group))
                                 or (nested is not None and len(nested))):
            problems.append(f"the file has weights for {prefix}layers/{key}, which the model "
                            f"does not have")
    for key, layer in expected:
        sub = layers[key] if key in layers and hasattr(layers[key], "get") else None
        if _is_model(layer):
            if sub is None:
                if layer.weights:
                    problems.append(f"no {prefix}layers/{key} group for model {layer.name!r}")
                continue
            _plan_layers(tree, sub, layer, f"{prefix}layers/{key}/", plan, problems,
                         skip_mismatch, depth + 1)
            continue
        group = sub.get("vars") if sub is not None else None
        saved = _vars_of(tree, group, where, f"{prefix}layers/{key}")
        live = _layer_vars(layer)
        if len(saved) != len(live):
            problems.append(f"layer {layer.name!r} ({prefix}layers/{key}): expected {len(live)} "
                            f"variables, found {len(saved)}")
            continue
        bad = [f"{v.name}: expected shape {v.shape}, found {a.shape}"
               for v, a in zip(live, saved) if a.shape != v.shape]
        if bad and skip_mismatch:
            warnings.warn(f"Skipping loading weights for layer {layer.name}: {bad[0]}")
            continue
        problems.extend(bad)
        plan.append((live, saved))


def _read_tree(tree, model, load_optimizer: bool, skip_mismatch: bool = False) -> None:
    f, where = tree.file, tree.where
    layers = f.get("layers")
    if layers is None or not hasattr(layers, "keys"):
        raise CorruptCheckpointError(f"{where}: no 'layers' group: not a Keras 3 weights file",
                                     path=where)
    plan, problems = [], []
    _plan_layers(tree, f, model, "", plan, problems, skip_mismatch)
    if problems:
        raise CheckpointMismatchError(f"{where} does not match the model: " + "; ".join(problems))
    for live, saved in plan:
        for var, value in zip(live, saved):
            var.assign(value.astype(var.dtype, copy=False))
    opt_group = f.get("optimizer/vars") if "optimizer" in f else None
    if load_optimizer and model.optimizer is not None and opt_group is not None:
        restore_optimizer_state(model, _vars_of(tree, opt_group, where, "optimizer"), where)


# --- .weights.h5 ------------------------------------------------------------------------------------
def is_keras3_layout(f) -> bool:
    """True for an open HDF5 file in Keras 3's object layout (a ``layers`` group, no
    ``layer_names``), so ``load_weights`` can tell it from a legacy ``.h5`` whatever its name."""
    return "layers" in f and "layer_names" not in f.attrs and "model_weights" not in f


def is_keras3_weights_file(path: str) -> bool:
    """:func:`is_keras3_layout` for a file; False for anything that is not a readable HDF5 file."""
    try:
        with limits.open_h5(os.fspath(path)) as tree:
            return is_keras3_layout(tree.file)
    except (OSError, limits.FastckptError):
        return False


def save_weights_keras3(model, path: str, fsync: bool = True) -> None:
    """``model.save_weights('m.weights.h5')`` in Keras 3's layout, optimizer state included."""
    if not model.built:
        raise ValueError(f"Model {model.name!r} has not been built, so it has no weights to save.")
    with atomic_h5(path, fsync=fsync) as f:
        _write_tree(f, model, include_optimizer=True)


def load_weights_keras3(model, path: str, skip_mismatch: bool = False) -> None:
    """Load a Keras 3 ``.weights.h5`` into a built model (and its optimizer, if compiled).

    All checks pass before any variable changes; a mismatch raises ``CheckpointMismatchError``.
    """
    if not model.built:
        raise ValueError("Unable to load weights into a model that has not been built.")
    path = os.fspath(path)
    with limits.open_h5(path) as tree, limits.h5_errors(path):
        load_weights_from_tree(tree, model, skip_mismatch=skip_mismatch)


def load_weights_from_tree(tree, model, skip_mismatch: bool = False) -> None:
    """``load_weights`` from a checked Keras 3-layout file (see ``limits.open_h5``)."""
    if not model.built:
        raise ValueError("Unable to load weights into a model that has not been built.")
    _read_tree(tree, model, load_optimizer=True, skip_mismatch=skip_mismatch)


# --- .keras ----------------------------------------------------------------------------------------
def _keras_config(model) -> Dict[str, Any]:
    config = model_to_keras3_config(model)
    compile_config = compile_to_config(model, dialect="keras3")
    if compile_config is not None:
        config["compile_config"] = compile_config
    return config


def save_model_keras(model, path: str, include_optimizer: bool = True, fsync: bool = True) -> None:
    """``model.save('m.keras')``: the ZIP Keras 3 ``load_model`` reads, written atomically.

    ``include_optimizer=False`` keeps the compile configuration (the optimizer's class and
    hyper-parameters) but not its state, so the loaded model starts a fresh optimizer.
    """
    if not model.built:
        raise ValueError(f"Model {model.name!r} has not been built, so it has no weights to save.")
    config = json.dumps(_keras_config(model))
    metadata = json.dumps({"keras_version": KERAS3_VERSION, "fastckpt_version": VERSION,
                           "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S"),
                           "fastckpt_rng_state": model._get_rng_state()})
    import h5py
    path = os.fspath(path)
    try:
        with atomic_file(path, fsync=fsync) as tmp:  # a directory in the way is refused here
            buf = io.BytesIO()
            with h5py.File(buf, "w") as f:
                _write_tree(f, model, include_optimizer)
            with open(tmp, "wb") as raw:
                with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as zf:
                    zf.writestr(_METADATA, metadata)
                    zf.writestr(_CONFIG, config)
                    zf.writestr(_WEIGHTS, buf.getbuffer())
    except OSError as e:
        if e.errno is None or e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, path) from e  # a failed write names the file


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out, limit: int, where: str) -> int:
    """Stream a member into ``out`` counting what actually comes out, whatever the header says."""
    total = 0
    try:
        with zf.open(info) as src:
            while True:
                chunk = src.read(_COPY_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > min(limit, info.file_size):
                    raise UnsafeFileError(f"{where}: member {info.filename!r} expands past its "
                                          f"declared {info.file_size} bytes (limit {limit})")
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        if isinstance(e, UnsafeFileError):  # a ValueError too, but ours
            raise
        raise CorruptCheckpointError(f"{where}: member {info.filename!r} is damaged ({e})",
                                     path=where) from None
    return total


def _infer_optimizer(tree) -> Optional[Any]:
    """Keras 3 drops an optimizer given by name (``compile('adam', ...)``) from compile_config;
    its weights still carry the optimizer's name, which is enough for the built-in ones."""
    f = tree.file
    g = f.get("optimizer/vars") if "optimizer" in f else None
    name = limits.read_str_attr(g, "name", tree.where) if g is not None else None
    # Keras uniquifies names per process: "adam", "adam_1", ...
    match = re.fullmatch(r"([a-z]+)(_\d+)?", (name or "").lower())
    if match is None or match.group(1) not in optimizers._BY_NAME:
        return None
    return optimizers._BY_NAME[match.group(1)](name=name)


def load_model_keras(path: str, custom_objects: Optional[Dict[str, Any]] = None,
                     compile: bool = True):
    """``load_model('m.keras')`` for archives written by fastckpt or Keras 3."""
    path = os.fspath(path)
    with limits.open_zip(path) as zf, tempfile.TemporaryDirectory(prefix="fastckpt-keras-") as tmpdir:
        names = {i.filename: i for i in zf.infolist()}
        if _CONFIG not in names:
            raise CorruptCheckpointError(f"{path}: the archive has no {_CONFIG}", path=path)
        if _WEIGHTS not in names:
            found = "model.weights.npz (not supported)" if "model.weights.npz" in names else "none"
            raise CorruptCheckpointError(f"{path}: expected {_WEIGHTS} in the archive, found {found}",
                                         path=path)
        raw = io.BytesIO()
        _read_member(zf, names[_CONFIG], raw, limits.MAX_JSON_BYTES, path)
        config = limits.load_json(raw.getvalue(), f"{path}: {_CONFIG}", path=path)
        if not isinstance(config, dict):
            raise CorruptCheckpointError(f"{path}: {_CONFIG} should hold an object", path=path)
        weights = os.path.join(tmpdir, _WEIGHTS)
        with open(weights, "wb") as out:
            size = _read_member(zf, names[_WEIGHTS], out, limits.MAX_ZIP_MEMBER_BYTES, path)
        where = f"{path}: {_WEIGHTS}"
        # The member is walked and checked before the config is trusted with anything.
        with limits.open_h5(weights, where=where) as tree:
            model = model_from_file_config(config, path, _CONFIG, custom_objects=custom_objects,
                                           max_params=max(size, 2**20))
            if not model.built:
                raise CorruptCheckpointError(f"{path}: the config gives no input shape (no "
                                             f"InputLayer and no build_config)", path=path)
            compile_config = config.get("compile_config") if compile else None
            if compile_config:
                with _naming(path, _CONFIG):
                    kwargs = compile_from_config(compile_config, custom_objects=custom_objects)
                if "optimizer" not in kwargs:
                    with limits.h5_errors(where):
                        kwargs["optimizer"] = _infer_optimizer(tree)
                if kwargs["optimizer"] is None:
                    warnings.warn(f"{path}: compile_config names no optimizer and the weights do "
                                  f"not identify one; the model is loaded uncompiled")
                else:
                    model.compile(**kwargs)
            with limits.h5_errors(where):
                _read_tree(tree, model, load_optimizer=model.optimizer is not None)
        if _METADATA in names:
            raw = io.BytesIO()
            _read_member(zf, names[_METADATA], raw, limits.MAX_JSON_BYTES, path)
            meta = limits.load_json(raw.getvalue(), f"{path}: {_METADATA}", path=path)
            if isinstance(meta, dict) and isinstance(meta.get("fastckpt_rng_state"), dict):
                with _naming(path, _METADATA):
                    model._set_rng_state(meta["fastckpt_rng_state"])
    return model
