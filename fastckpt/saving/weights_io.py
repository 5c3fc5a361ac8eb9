"""``Model.save_weights`` / ``load_weights``: choose the format from the path, then delegate."""

from __future__ import annotations

import os
import sys
from typing import Optional

from fastckpt.checkpoint import object_graph as og, state as state_mod
from fastckpt.checkpoint.bundle import StagedBundle, write_bundle, write_bundle_collective
from fastckpt.checkpoint.paths import fspath
from fastckpt.checkpoint.saver import collect_tensors, restore_trackable
from fastckpt.errors import CheckpointNotFoundError
from fastckpt.saving import limits
from fastckpt.saving.formats import FILE_SUFFIXES, sniff_format, suffix_format
from fastckpt.saving.inference_plan import plan_extra
from fastckpt.saving.keras_v3 import (is_keras3_layout, load_weights_from_tree as load_k3,
                                      save_weights_keras3)
from fastckpt.saving.legacy_h5 import load_weights_from_tree as load_legacy, save_weights_h5

__all__ = ["save_weights", "load_weights", "is_h5_path"]


def is_h5_path(path: str) -> bool:
    return path.endswith(FILE_SUFFIXES)


def _confirm_overwrite(path: str) -> None:
    """Keras asks before overwriting when ``overwrite=False``; off a terminal it refuses."""
    if sys.stdin is not None and sys.stdin.isatty():
        answer = input(f"[WARNING] {path} already exists - overwrite? [y/n] ").strip().lower()
        if answer in ("y", "yes"):
            return
    raise FileExistsError(f"{path} already exists and overwrite=False")


def save_weights(model, filepath, overwrite: bool = True, save_format: Optional[str] = None,
                 fsync: bool = True) -> None:
    path = fspath(filepath, "filepath")
    if save_format not in (None, "tf", "h5"):
        raise ValueError(f"Expected save_format 'tf', 'h5' or None, got {save_format!r}")
    if not model.built:
        raise ValueError("Unable to save weights: the model has not been built yet. Call it on "
                         "data or give the first layer an input_shape.")
    h5 = save_format == "h5" or (save_format is None and is_h5_path(path))
    if suffix_format(path) == "keras":
        raise ValueError(f"{path}: .keras files hold whole models; use model.save()")
    exists = os.path.exists(path) if h5 else state_mod.checkpoint_exists(path)
    if exists and not overwrite:
        _confirm_overwrite(path)
    strategy = getattr(model, "_distribute_strategy", None)
    if h5 and strategy is not None and strategy.num_replicas_in_sync > 1:
        # One HDF5 file per job, written by rank 0 (TF prefixes get one shard per replica).
        strategy.run_on_chief(
            lambda: save_weights_keras3(model, path, fsync=fsync) if path.endswith(".weights.h5")
            else save_weights_h5(model, path, fsync=fsync))
        return
    if h5:
        if path.endswith(".weights.h5"):  # Keras 3's layout, which Keras 3 and tf_keras read
            save_weights_keras3(model, path, fsync=fsync)
        else:
            save_weights_h5(model, path, fsync=fsync)
        return
    write_tf_weights(path, tf_weight_tensors(model), fsync=fsync, strategy=strategy)


def tf_weight_tensors(model) -> dict:
    """What ``save_weights`` writes for a TF-format prefix, as key -> live buffer (no copies)."""
    # The inference plan lets the C++ runtime (fastckpt.h) run these weights without Python.
    graph = og.build_graph(model)
    keys = {id(var): key for key, var in graph[1]}
    return collect_tensors(model, extra=plan_extra(model, keys=keys), graph=graph)


def write_tf_weights(path: str, tensors, fsync: bool = True, threads=None, strategy=None) -> None:
    """Commit ``tensors`` (a mapping, or a ``StagedBundle`` snapshot) at ``path``, then record it as
    the directory's latest checkpoint (as tf.keras does). Safe to run on a worker thread with a
    snapshot. Under a strategy with several replicas (``fastckpt.distribute``), every replica
    calls this: each writes one data shard, rank 0 commits the index and then the state file, and
    all return once both are on disk."""
    directory = os.path.dirname(path) or "."
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        if strategy.rank == 0:
            os.makedirs(directory, exist_ok=True)
        strategy.barrier()
        write_bundle_collective(path, tensors, strategy, fsync=fsync, threads=threads)
        error = None
        if strategy.rank == 0:
            try:
                state_mod.write_state(directory, path, fsync=fsync)
            except OSError as e:
                error = f"{type(e).__name__}: {e}"
        error = strategy.bcast(error)
        if error is not None:
            raise OSError(f"{path}: the checkpoint state file was not updated: {error}")
        return
    os.makedirs(directory, exist_ok=True)
    if isinstance(tensors, StagedBundle):
        tensors.write(path, fsync=fsync)
    else:
        write_bundle(path, tensors, fsync=fsync, threads=threads)
    state_mod.write_state(directory, path, fsync=fsync)


def load_weights(model, filepath, skip_mismatch: bool = False, by_name: bool = False):
    path = fspath(filepath, "filepath")
    if not model.built:
        raise ValueError("Unable to load weights into a model that has not been built: give the "
                         "first layer an input_shape or call the model on data first.")
    if is_h5_path(path) or (os.path.isfile(path) and _looks_like_hdf5(path)):
        # One checked open for every layout (limits.open_h5 refuses FIFOs, walks the whole tree).
        with limits.open_h5(path) as tree, limits.h5_errors(path):
            if is_keras3_layout(tree.file):
                load_k3(tree, model, skip_mismatch=skip_mismatch)
            else:
                load_legacy(tree, model, by_name=by_name, skip_mismatch=skip_mismatch)
        return None
    if by_name:
        raise NotImplementedError("Weights may only be loaded based on topology into Models when "
                                  "loading TensorFlow-formatted weights (got by_name=True).")
    if os.path.isdir(path):
        latest = state_mod.latest_checkpoint(path)
        if latest is None:
            raise CheckpointNotFoundError(f"{path} is a directory with no checkpoint in it")
        path = latest
    if not state_mod.checkpoint_exists(path):
        raise CheckpointNotFoundError(f"No checkpoint found at prefix {path!r} (expected "
                                      f"{path}.index and its data files)")
    if model.optimizer is not None:
        model.optimizer.build(model.trainable_weights)
    return restore_trackable(model, path, strict=True, skip_mismatch=skip_mismatch)


def _looks_like_hdf5(path: str) -> bool:
    return sniff_format(path) == "h5"
