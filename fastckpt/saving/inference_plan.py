"""The inference plan: what the C++ runtime needs to run a model, as a few lines of text.

The C++ embedding API (``csrc/include/fastckpt/fastckpt.h``) must not parse Keras JSON, so every
checkpoint fastckpt writes for a model also carries ``_fastckpt/inference_plan``, a string tensor
committed with the weights (same bundle, same atomic commit). Its grammar is specified in
``docs/format.md`` ("Inference plan") and enforced by ``csrc/runtime/plan.cpp``::

    fastckpt-plan 1
    input 784
    dense 512 relu layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE layer_with_weights-0/bias/.ATTRIBUTES/VARIABLE_VALUE
    dropout 0.2
    dense 10 linear layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE

``plan_for`` returns ``None`` for a model the runtime cannot run exactly (a custom Python layer, a
subclass of a built-in layer, an input that is not a flat feature vector, weights that are not
float32): no plan is written, and the C++ loader says so instead of computing something else.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from fastckpt import ops
from fastckpt.checkpoint import object_graph as og
from fastckpt.layers import Dense, Dropout
from fastckpt.saving.model_registry import model_class

__all__ = ["plan_for", "plan_extra", "PLAN_KEY", "PLAN_VERSION", "MAX_PLAN_BYTES", "MAX_LINE_BYTES",
           "MAX_LAYERS", "MAX_WIDTH"]

# From the extension (fastckpt/format.h), the rules the C++ runtime parses with: a model beyond the
# limits gets no plan rather than one the runtime would refuse.
PLAN_KEY = ops.PLAN_FORMAT["key"]
PLAN_VERSION = ops.PLAN_FORMAT["version"]
_PLAN_MAGIC = ops.PLAN_FORMAT["magic"]
MAX_PLAN_BYTES = ops.PLAN_FORMAT["max_plan_bytes"]
MAX_LINE_BYTES = ops.PLAN_FORMAT["max_line_bytes"]
MAX_LAYERS = ops.PLAN_FORMAT["max_layers"]
MAX_WIDTH = ops.PLAN_FORMAT["max_width"]


def _key_ok(key: str) -> bool:
    # Keys are single tokens: printable ASCII without spaces (TF's escaped object paths always are).
    return 0 < len(key) <= MAX_LINE_BYTES // 4 and all(0x21 <= ord(c) <= 0x7E for c in key)


def plan_for(model, root=None, keys: Optional[Dict[int, str]] = None) -> Optional[bytes]:
    """The plan for ``model`` with the checkpoint keys of a save rooted at ``root`` (default: the
    model itself, as ``save_weights`` writes it), or ``None`` when the C++ runtime cannot run it.
    ``keys`` (``id(variable) -> key`` of that save's walk) spares a second walk of the graph."""
    if not isinstance(model, model_class("Sequential")) or not model.built:
        return None
    in_shape = tuple(model.input_shape)
    if len(in_shape) != 2 or not isinstance(in_shape[1], int) or not 0 < in_shape[1] <= MAX_WIDTH:
        return None
    if keys is None:
        keys = {id(var): key for key, var in og.build_graph(model if root is None else root)[1]}
    lines = [f"{_PLAN_MAGIC} {PLAN_VERSION}", f"input {in_shape[1]}"]
    for layer in model.layers:
        # Exact types only: a subclass may override call() with math the runtime does not know.
        if type(layer) is Dense:
            if layer.activation not in ops.ACTIVATIONS or not 0 < layer.units <= MAX_WIDTH:
                return None
            weights = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
            if any(w is None or np.dtype(w.dtype) != np.float32 or id(w) not in keys
                   or not _key_ok(keys[id(w)]) for w in weights):
                return None
            bias = keys[id(layer.bias)] if layer.use_bias else "-"
            lines.append(f"dense {layer.units} {layer.activation} {keys[id(layer.kernel)]} {bias}")
        elif type(layer) is Dropout:
            # Inference ignores dropout; the line keeps the plan a faithful outline of the model.
            lines.append(f"dropout {float(layer.rate)!r}")
        else:
            return None
    if len(lines) - 2 > MAX_LAYERS or any(len(line) > MAX_LINE_BYTES for line in lines):
        return None
    text = ("\n".join(lines) + "\n").encode("ascii")
    return text if len(text) <= MAX_PLAN_BYTES else None


def plan_extra(model, root=None, keys: Optional[Dict[int, str]] = None) -> Dict[str, bytes]:
    """``{PLAN_KEY: plan}`` for ``save_trackable(extra=...)``, or ``{}`` when there is no plan."""
    plan = plan_for(model, root, keys)
    return {PLAN_KEY: plan} if plan is not None else {}
