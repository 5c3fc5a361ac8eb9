"""Save and restore an object graph (a model, an optimizer, a ``Checkpoint``) as a tensor bundle.

Saving walks the objects (``object_graph.build_graph``) and hands their live buffers to the
bundle writer: no copy of the weights is made in Python. Restoring matches saved values to live
variables through the saved object graph, checks every shape and dtype first, and only then
assigns, so a mismatch leaves the model untouched.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np

from fastckpt.checkpoint import object_graph as og
from fastckpt.checkpoint.bundle import BundleReader, write_bundle, write_bundle_collective
from fastckpt.errors import CheckpointMismatchError
from fastckpt.variables import Variable

__all__ = ["save_trackable", "restore_trackable", "read_extra", "LoadStatus", "EXTRA_PREFIX"]

#: Keys of fastckpt's own side records (training state); never part of a model's values.
EXTRA_PREFIX = "_fastckpt/"


class LoadStatus:
    """What a restore matched, returned by ``load_weights`` and ``Checkpoint.restore``."""

    def __init__(self, path: str, restored: List[Tuple[Variable, str]], missing: List[Variable],
                 unused_keys: List[str]):
        self.path = path
        self.restored = restored
        self.missing = missing
        self.unused_keys = unused_keys

    def assert_consumed(self) -> "LoadStatus":
        """Every value in the file was used and every live variable was restored."""
        if self.unused_keys or self.missing:
            raise AssertionError(
                f"Checkpoint {self.path} was not fully consumed. Unused values in the file: "
                f"{self.unused_keys}. Live variables not restored: {[v.name for v in self.missing]}")
        return self

    def assert_existing_objects_matched(self) -> "LoadStatus":
        if self.missing:
            raise AssertionError(f"Checkpoint {self.path}: live variables not restored: "
                                 f"{[v.name for v in self.missing]}")
        return self

    def assert_nontrivial_match(self) -> "LoadStatus":
        if not self.restored:
            raise AssertionError(f"Checkpoint {self.path}: nothing except the root object matched")
        return self

    def expect_partial(self) -> "LoadStatus":
        return self

    def run_restore_ops(self, session=None) -> None:
        return None

    def __repr__(self) -> str:
        return (f"<LoadStatus {self.path}: {len(self.restored)} restored, {len(self.missing)} "
                f"missing, {len(self.unused_keys)} unused>")


def collect_tensors(root, extra: Optional[Dict[str, bytes]] = None, graph=None) -> Dict[str, object]:
    """Key -> live buffer for every value of ``root`` (no copies), ``extra`` side records, and
    the object graph, in TensorFlow's data-file order (variables in walk order, graph last).
    ``graph`` is ``og.build_graph(root)`` when the caller already walked it."""
    nodes, values = graph if graph is not None else og.build_graph(root)
    tensors: Dict[str, object] = {key: var.value for key, var in values}
    for key, blob in (extra or {}).items():
        tensors[key] = blob
    tensors[og.GRAPH_KEY] = og.encode_graph(nodes)
    return tensors


def save_trackable(root, prefix: str, fsync: bool = True, num_shards: int = 1,
                   extra: Optional[Dict[str, bytes]] = None, strategy=None) -> None:
    """Write ``root``'s variables and object graph straight from their buffers; ``extra`` adds
    string tensors under their own keys (not part of the graph, so TensorFlow ignores them) in
    the same atomic commit. With a ``strategy`` of several replicas, every replica calls this
    and writes one shard (``write_bundle_collective``)."""
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        write_bundle_collective(prefix, collect_tensors(root, extra), strategy, fsync=fsync)
        return
    write_bundle(prefix, collect_tensors(root, extra), num_shards=num_shards, fsync=fsync)


def read_extra(prefix: str, key: str) -> Optional[bytes]:
    """A side record written with ``save_trackable(extra=...)``, or ``None``."""
    with BundleReader(prefix) as reader:
        if key not in reader:
            return None
        value = reader.get_tensor(key)
        return value if isinstance(value, bytes) else bytes(value)


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def restore_trackable(root, prefix: str, strict: bool = True, skip_mismatch: bool = False,
                      strict_prefixes: Tuple[str, ...] = ("layer_with_weights-", "layer-")) -> LoadStatus:
    """Restore ``root``'s variables from the bundle at ``prefix``.

    With ``strict``, a live variable whose value is missing, a value of the wrong shape or dtype,
    or an unused value under one of ``strict_prefixes`` (the model's own layers) raises
    ``CheckpointMismatchError`` listing all of them; nothing is assigned in that case.
    ``skip_mismatch`` turns wrong shapes into warnings and leaves those variables as they are.
    """
    _, live = og.build_graph(root)
    live_vars = [v for _, v in live]
    with BundleReader(prefix) as reader:
        keys = set(reader.keys())
        if og.GRAPH_KEY in keys:
            nodes = og.decode_graph(bytes(reader.get_tensor(og.GRAPH_KEY)))
            pairs = og.match_graph(root, nodes)
        else:  # no graph: fall back to our own key naming
            pairs = [(v, k) for k, v in live if k in keys]
        pairs = [(v, k) for v, k in pairs if k in keys]
        used = {k for _, k in pairs}
        wrong: List[str] = []
        ok: List[Tuple[Variable, str]] = []
        for var, key in pairs:
            dtype, shape = reader.numpy_dtype(key), tuple(reader.shape(key))
            if shape != tuple(var.shape) or np.dtype(dtype) != var.dtype:
                msg = (f"{var.name} <- {key}: expected {var.dtype.name}{_fmt(var.shape)}, found "
                       f"{np.dtype(dtype).name}{_fmt(shape)}")
                if skip_mismatch and np.dtype(dtype) == var.dtype:
                    warnings.warn(f"Skipping loading of weights with mismatched shape: {msg}")
                    continue
                wrong.append(msg)
            else:
                ok.append((var, key))
        restored_ids = {id(v) for v, _ in pairs}
        missing = [v for v in live_vars if id(v) not in restored_ids]
        unused = sorted(k for k in keys - used
                        if k != og.GRAPH_KEY and not k.startswith(EXTRA_PREFIX))
        if strict:
            layer_vars = {id(v) for k, v in live if k.startswith(strict_prefixes)}
            missing_model = [v for v in missing if id(v) in layer_vars]
            unexpected = [k for k in unused if k.startswith(strict_prefixes)]
            if wrong or missing_model or unexpected:
                parts = []
                if missing_model:
                    parts.append("missing from the checkpoint: " + ", ".join(v.name for v in missing_model))
                if unexpected:
                    parts.append("in the checkpoint but not in the model: " + ", ".join(unexpected))
                if wrong:
                    parts.append("wrong shape or dtype: " + "; ".join(wrong))
                raise CheckpointMismatchError(
                    f"Checkpoint {prefix} does not match the model: " + " | ".join(parts))
        # Read (and CRC-check) everything before the first assignment.
        values = [(var, reader.get_tensor(key)) for var, key in ok]
        for var, value in values:
            var.assign(value)
    return LoadStatus(prefix, ok, missing, unused)
