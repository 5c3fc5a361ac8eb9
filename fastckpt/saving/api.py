"""``Model.save`` and ``keras.models.load_model``: pick the format from the path."""

from __future__ import annotations

import os
from typing import Optional

from fastckpt.checkpoint.paths import fspath
from fastckpt.errors import CheckpointNotFoundError
from fastckpt.saving.atomic_dir import previous_generation
from fastckpt.saving.formats import sniff_format, suffix_format
from fastckpt.saving.keras_v3 import load_model_keras, save_model_keras
from fastckpt.saving.legacy_h5 import load_model_h5, save_model_h5
from fastckpt.saving.saved_model import is_model_dir, load_model_dir, save_model_dir
from fastckpt.saving.weights_io import _confirm_overwrite

__all__ = ["save_model", "load_model"]


def _format_of(path: str, save_format: Optional[str]) -> str:
    if save_format not in (None, "tf", "h5", "keras"):
        raise ValueError(f"Expected save_format 'tf', 'h5', 'keras' or None, got {save_format!r}")
    if save_format:
        return save_format
    return suffix_format(path) or "tf"


def save_model(model, filepath, overwrite: bool = True, include_optimizer: bool = True,
               save_format: Optional[str] = None, fsync: bool = True, **kwargs) -> None:
    path = fspath(filepath, "filepath")
    for k in ("signatures", "options", "save_traces"):
        kwargs.pop(k, None)
    if kwargs:
        raise TypeError(f"save: unexpected keyword argument(s) {sorted(kwargs)}")
    if not model.built:
        raise ValueError("Unable to save the model: it has not been built. Give the first layer an "
                         "input_shape or call the model on data first.")
    fmt = _format_of(path, save_format)
    strategy = getattr(model, "_distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1 and fmt == "tf":
        # The directory format: one data shard per replica, committed by rank 0.
        if not overwrite:
            strategy.run_on_chief(lambda: os.path.exists(path) and _confirm_overwrite(path))
        save_model_dir(model, path, overwrite=True, include_optimizer=include_optimizer,
                       fsync=fsync, strategy=strategy)
        return
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        # .h5 and .keras are single files: rank 0 writes them, the others wait for its outcome.
        model._distribute_strategy = None
        try:
            strategy.run_on_chief(lambda: save_model(model, path, overwrite=overwrite,
                                                     include_optimizer=include_optimizer,
                                                     save_format=save_format, fsync=fsync))
        finally:
            model._distribute_strategy = strategy
        return
    if os.path.exists(path) and not overwrite:
        _confirm_overwrite(path)
    if fmt == "tf":
        save_model_dir(model, path, overwrite=True, include_optimizer=include_optimizer, fsync=fsync)
    elif fmt == "h5":
        save_model_h5(model, path, include_optimizer=include_optimizer, fsync=fsync)
    else:
        save_model_keras(model, path, include_optimizer=include_optimizer, fsync=fsync)


def load_model(filepath, custom_objects: Optional[dict] = None, compile: bool = True,
               safe_mode: bool = True, options=None):
    """Load a model saved by ``model.save`` (directory, ``.h5`` or ``.keras``), or by tf.keras /
    Keras 3 in their ``.h5`` / ``.keras`` formats. Never runs code from the file."""
    path = fspath(filepath, "filepath")
    if not safe_mode:
        raise ValueError("safe_mode=False is not supported: fastckpt never deserializes code")
    # A model directory, or the old copy of one a fallback commit has moved aside for a moment.
    if os.path.isdir(path) or previous_generation(path) is not None:
        if os.path.isdir(path) and not is_model_dir(path):
            if os.path.isfile(os.path.join(path, "saved_model.pb")):
                raise ValueError(f"{path} is a TensorFlow SavedModel (a graph); fastckpt loads "
                                 f"its own directory format, .h5 and .keras files")
        return load_model_dir(path, custom_objects=custom_objects, compile=compile)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"No file or directory found at {path}")
    fmt = sniff_format(path)
    if fmt == "keras":
        return load_model_keras(path, custom_objects=custom_objects, compile=compile)
    if fmt == "h5":
        return load_model_h5(path, custom_objects=custom_objects, compile=compile)
    raise ValueError(f"{path}: not a model file fastckpt knows (expected a model directory, an "
                     f"HDF5 .h5 file or a .keras zip)")
