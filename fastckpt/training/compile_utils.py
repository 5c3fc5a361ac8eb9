"""``compile``'s ``loss``/``loss_weights``/``metrics``/``weighted_metrics`` resolved per model
output, as tf.keras 2.x resolves them.

Each argument may be one value, a list (one entry per output), or a dict keyed by output name
(a missing name: no loss / no metric for that output). One loss or loss weight applies to every
output; a flat list of metrics applies to every output (each output gets its own copies); a list
of lists gives each output its own. With several outputs, metric names get the output's name as
prefix (``out_accuracy``) and each output with a loss gets a ``<output>_loss`` tracker; a weighted
metric whose name is taken gets ``weighted_`` in front, as tf.keras names them.
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from fastckpt import losses as losses_mod, metrics as metrics_mod

__all__ = ["CompiledOutputs", "resolve"]


def _nested(v) -> bool:
    return isinstance(v, (list, tuple, dict))


def _per_output(value, names: List[str], what: str, broadcast_lists: bool = False) -> List[Any]:
    """``value`` conformed to one entry per output (tf.keras ``_conform_to_outputs``)."""
    n = len(names)
    if value is None:
        return [None] * n
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"compile: {what} has key(s) {unknown} that do not correspond to any "
                             f"model output. Valid output names: {names}")
        return [value.get(k) for k in names]
    if isinstance(value, (list, tuple)):
        if broadcast_lists and not any(_nested(v) for v in value):
            return [list(value) for _ in names]
        if len(value) != n:
            raise ValueError(f"compile: {what} has {len(value)} entries but the model has {n} "
                             f"output(s) {names}; give one per output, or a dict keyed by output "
                             f"name")
        return list(value)
    return [value] * n


def _copy_metric(m):
    return type(m).from_config(m.get_config()) if isinstance(m, metrics_mod.Metric) else m


class CompiledOutputs:
    """What ``compile`` resolved, one entry per output (in ``output_names`` order)."""

    def __init__(self, names, losses, loss_weights, metrics, weighted_metrics, loss_trackers):
        self.names: List[str] = names
        self.losses: List[Optional[losses_mod.Loss]] = losses
        self.loss_weights: List[Optional[float]] = loss_weights
        self.metrics: List[List[metrics_mod.Metric]] = metrics
        self.weighted_metrics: List[List[metrics_mod.Metric]] = weighted_metrics
        self.loss_trackers: List[Optional[metrics_mod.Mean]] = loss_trackers

    @property
    def flat_metrics(self) -> List[metrics_mod.Metric]:
        """tf.keras' order: per output, its metrics then its weighted metrics."""
        out = []
        for ms, wms in zip(self.metrics, self.weighted_metrics):
            out.extend(ms)
            out.extend(wms)
        return out


def resolve(names: List[str], loss, loss_weights=None, metrics=None,
            weighted_metrics=None) -> CompiledOutputs:
    n = len(names)
    multi = n > 1
    # The same Metric object in both lists would be updated twice (tf.keras refuses it too).
    seen, dup = set(), []
    for m in _flat(metrics) + _flat(weighted_metrics):
        if isinstance(m, metrics_mod.Metric):
            if id(m) in seen:
                dup.append(m.name)
            seen.add(id(m))
    if dup:
        raise ValueError(f"compile: the same metric object is listed more than once in metrics "
                         f"and weighted_metrics: {dup}. Each would be updated twice; pass "
                         f"separate instances.")

    raw_losses = _per_output(loss, names, "loss")
    out_losses = [None if v is None else losses_mod.get(v) for v in raw_losses]
    if all(v is None for v in out_losses):
        raise ValueError("compile: expected a loss, e.g. loss='sparse_categorical_crossentropy'")

    weights = []
    for k, w in enumerate(_per_output(loss_weights, names, "loss_weights")):
        if w is not None:
            if isinstance(w, (bool, str, bytes)) or not np.isscalar(w) or not np.isreal(w):
                raise TypeError(f"compile: expected a number as loss weight of output "
                                f"{names[k]!r}, got {w!r}")
            w = float(w)
        weights.append(w)

    def metric_lists(value, what):
        per = _per_output(value, names, what, broadcast_lists=True)
        lists = []
        for k, entry in enumerate(per):
            items = [] if entry is None else (list(entry) if isinstance(entry, (list, tuple))
                                              else [entry])
            resolved = []
            for m in items:
                if m is None:
                    continue
                # Broadcast to several outputs: each output keeps its own state.
                obj = metrics_mod.get(m, loss=out_losses[k])
                if multi and (value is not None and not isinstance(value, dict)
                              and not any(_nested(v) for v in _as_list(value))):
                    obj = _copy_metric(obj) if obj is m else obj
                resolved.append(obj)
            lists.append(resolved)
        return lists

    out_metrics = metric_lists(metrics, "metrics")
    out_weighted = metric_lists(weighted_metrics, "weighted_metrics")

    taken = {"loss"}
    trackers = []
    for name, l in zip(names, out_losses):
        if multi and l is not None:
            trackers.append(metrics_mod.Mean(name=f"{name}_loss"))
            taken.add(f"{name}_loss")
        else:
            trackers.append(None)
    for name, ms, wms in zip(names, out_metrics, out_weighted):
        for m in ms:
            if multi:
                m.name = f"{name}_{m.name}"
            if m.name in taken:
                raise ValueError(f"Found two metrics with the same name: {m.name}. All the "
                                 f"metrics added to the model need to have unique names.")
            taken.add(m.name)
        for m in wms:
            if multi:
                m.name = (f"{name}_weighted_{m.name}" if f"{name}_{m.name}" in taken
                          else f"{name}_{m.name}")
            elif m.name in taken:
                m.name = f"weighted_{m.name}"
            if m.name in taken:
                raise ValueError(f"Found two weighted metrics with the same name: {m.name}. All "
                                 f"the metrics added to the model need to have unique names.")
            taken.add(m.name)
    return CompiledOutputs(list(names), out_losses, weights, out_metrics, out_weighted, trackers)


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _flat(v) -> list:
    if v is None:
        return []
    if isinstance(v, dict):
        return [m for x in v.values() for m in _flat(x)]
    if isinstance(v, (list, tuple)):
        return [m for x in v for m in _flat(x)]
    return [v]
