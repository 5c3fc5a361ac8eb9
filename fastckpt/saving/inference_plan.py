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

A Sequential stack of Dense and Dropout layers gets a version 1 plan (readable by every runtime);
a Functional model gets a version 2 plan: named inputs, a graph of nodes in execution order,
named outputs::

    fastckpt-plan 2
    input num 4 float
    input ids 6 int
    node t2 embedding ids 50 3 layer_with_weights-0/embeddings/.ATTRIBUTES/VARIABLE_VALUE
    node t3 gap1d t2 6
    node t4 concat num,t3
    node t5 dense t4 2 softmax <kernel key> <bias key>
    output head t5
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from fastckpt import ops
from fastckpt.checkpoint import object_graph as og
from fastckpt import layers as L
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
# Version 2: named inputs/outputs, inputs of one node, floats of one row of a node's output.
MAX_INPUTS = ops.PLAN_FORMAT["max_inputs"]
MAX_NODE_INPUTS = ops.PLAN_FORMAT["max_node_inputs"]
MAX_ROW_FLOATS = ops.PLAN_FORMAT["max_row_floats"]


def _key_ok(key: str) -> bool:
    # Keys are single tokens: printable ASCII without spaces (TF's escaped object paths always are).
    return 0 < len(key) <= MAX_LINE_BYTES // 4 and all(0x21 <= ord(c) <= 0x7E for c in key)


def plan_for(model, root=None, keys: Optional[Dict[int, str]] = None) -> Optional[bytes]:
    """The plan for ``model`` with the checkpoint keys of a save rooted at ``root`` (default: the
    model itself, as ``save_weights`` writes it), or ``None`` when the C++ runtime cannot run it.
    ``keys`` (``id(variable) -> key`` of that save's walk) spares a second walk of the graph."""
    if not model.built:
        return None
    if isinstance(model, model_class("Functional")) and not isinstance(model, model_class("Sequential")):
        if keys is None:
            keys = {id(var): key for key, var in og.build_graph(model if root is None else root)[1]}
        return _finish(_safe_lines(model, keys))
    if not isinstance(model, model_class("Sequential")):
        return None
    if not all(type(layer) in (Dense, Dropout) for layer in model.layers):
        # Other layers: a version 2 plan of the chain.
        if keys is None:
            keys = {id(var): key for key, var in og.build_graph(model if root is None else root)[1]}
        try:
            chain = _Chain(model)
        except Exception:  # a layer whose output shape is unknown here: no plan
            return None
        return _finish(_safe_lines(chain, keys))
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
    lines[0] = f"{_PLAN_MAGIC} 1"  # a dense stack stays readable by version 1 runtimes
    return _finish(lines)


def _safe_lines(model, keys):
    # Saving must not fail because a plan cannot be written: an unexpected layer state is no plan.
    try:
        return _functional_lines(model, keys)
    except (AttributeError, TypeError, ValueError, KeyError):
        return None


def _finish(lines) -> Optional[bytes]:
    if lines is None or len(lines) - 2 > MAX_LAYERS or any(len(line) > MAX_LINE_BYTES for line in lines):
        return None
    text = ("\n".join(lines) + "\n").encode("ascii")
    return text if len(text) <= MAX_PLAN_BYTES else None


# Normalization's epsilon (fastckpt/layers/normalization.py, _BACKEND_EPSILON, as Keras' backend).
_NORMALIZATION_EPSILON = 1e-7

# Layers that are the identity at inference, or only relabel a row-major layout.
_IDENTITY = ("Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Flatten", "Reshape")
_MERGE = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Average": "average",
          "Maximum": "maximum", "Minimum": "minimum"}


def _name_ok(name) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 256 and "," not in name and _key_ok(name)


def _width(shape) -> Optional[int]:
    if len(shape) < 2 or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
        return None
    w = int(np.prod(shape[1:], dtype=np.int64))
    return w if w <= MAX_WIDTH else None


def _f32_weights(ws, keys) -> bool:
    return all(w is not None and np.dtype(w.dtype) == np.float32 and id(w) in keys
               and _key_ok(keys[id(w)]) for w in ws)


class _ChainStep:
    """A Sequential layer seen as a Functional step: slot i in, slot i + 1 out."""

    class _Out:
        def __init__(self, shape):
            self.shape = shape

    def __init__(self, layer, i, out_shape):
        self.layer, self.in_slots, self.out_slots = layer, [i], [i + 1]
        self.kwargs, self.multi_in = {}, False
        self.node = type("N", (), {"outputs": [self._Out(out_shape)]})()


class _Chain:
    """The graph attributes ``_graph_lines`` reads, for a Sequential model."""

    def __init__(self, model):
        shape = tuple(model.input_shape)
        first = model.layers[0] if model.layers else None
        # A leading Embedding reads ids: the C API takes them as int32.
        dtype = "int32" if type(first) is getattr(L, "Embedding", None) else "float32"
        self.inputs = [type("T", (), {"shape": shape, "dtype": dtype})()]
        self.input_names, self.output_names = list(model.input_names), list(model.output_names)
        self._input_slots, self._steps = [0], []
        for i, layer in enumerate(model.layers):
            shape = tuple(layer.compute_output_shape(shape))
            self._steps.append(_ChainStep(layer, i, shape))
        self._output_slots = [len(model.layers)]


def _functional_lines(model, keys):
    """Version 2 lines for a Functional model (or a ``_Chain``), or None when a step has no exact
    C++ equivalent."""
    types = {getattr(L, n, None): n for n in (("Dense", "Activation", "Rescaling", "Concatenate",
                                                "Embedding", "GlobalAveragePooling1D",
                                                "GlobalMaxPooling1D", "ReLU", "LeakyReLU", "ELU",
                                                "Softmax", "PReLU", "BatchNormalization",
                                                "LayerNormalization", "Normalization") + _IDENTITY + tuple(_MERGE))}
    types.pop(None, None)
    in_names = list(model.input_names)
    out_names = list(model.output_names)
    if len(set(in_names)) != len(in_names) or len(set(out_names)) != len(out_names):
        return None
    if not all(_name_ok(n) for n in in_names + out_names) or max(len(in_names), len(out_names)) > MAX_INPUTS:
        return None
    lines = [f"{_PLAN_MAGIC} {PLAN_VERSION}"]
    tname, shapes, is_int = {}, {}, {}
    row_floats = 0
    masked = {}  # slot of a mask_zero Embedding's output -> its ids' tensor name
    for name, slot, t in zip(in_names, model._input_slots, model.inputs):
        shape = tuple(t.shape)
        w = _width(shape)
        if w is None or slot in tname:
            return None
        kind = np.dtype(t.dtype).kind
        if kind not in "iuf" or (kind == "f" and len(shape) != 2):
            return None
        tname[slot], shapes[slot], is_int[slot] = name, shape, kind in "iu"
        lines.append(f"input {name} {w} {'int' if is_int[slot] else 'float'}")
    for st in model._steps:
        layer = st.layer
        kind = types.get(type(layer))  # exact types: a subclass may override call()
        if kind is None or st.kwargs or len(st.out_slots) != 1 or any(s not in tname for s in st.in_slots):
            return None
        ins = [shapes[s] for s in st.in_slots]
        if any(is_int[s] for s in st.in_slots) != (kind == "Embedding"):
            return None
        out_shape = tuple(st.node.outputs[0].shape)
        if _width(out_shape) is None:
            return None
        multi = kind == "Concatenate" or kind in _MERGE
        if multi != bool(st.multi_in) or (not multi and len(ins) != 1) or len(ins) > MAX_NODE_INPUTS:
            return None
        row_floats += _width(out_shape)
        if row_floats > MAX_ROW_FLOATS:
            return None
        x = ins[0]
        args = None
        if kind == "Dense":
            if len(x) != 2 or layer.activation not in ops.ACTIVATIONS:
                return None
            ws = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
            if not _f32_weights(ws, keys):
                return None
            bias = keys[id(layer.bias)] if layer.use_bias else "-"
            args = f"dense {{}} {layer.units} {layer.activation} {keys[id(layer.kernel)]} {bias}"
        elif kind in _IDENTITY:
            args = "identity {}"
        elif kind == "Activation":
            act = layer.activation if isinstance(layer.activation, str) else None
            if act not in ops.ACTIVATIONS or (act in ("softmax", "log_softmax") and len(x) != 2):
                return None
            args = f"activation {{}} {act}"
        elif kind == "ReLU":
            mx = "-" if layer.max_value is None else repr(float(layer.max_value))
            args = f"relu {{}} {float(layer.negative_slope)!r} {mx} {float(layer.threshold)!r}"
        elif kind == "LeakyReLU":
            args = f"relu {{}} {float(layer.alpha)!r} - 0.0"
        elif kind == "ELU":
            args = f"elu {{}} {float(layer.alpha)!r}"
        elif kind == "Softmax":
            if len(x) != 2 or layer.axis not in (-1, 1, [-1], [1], (-1,), (1,)):
                return None
            args = "softmax {}"
        elif kind == "PReLU":
            if len(x) != 2 or layer.shared_axes or tuple(layer.alpha.shape) != (x[1],) \
                    or not _f32_weights([layer.alpha], keys):
                return None
            args = f"prelu {{}} {keys[id(layer.alpha)]}"
        elif kind in ("BatchNormalization", "LayerNormalization"):
            if len(x) != 2 or list(np.atleast_1d(layer.axis)) not in ([1], [-1]):
                return None
            ws = ([layer.gamma] if layer.scale else []) + ([layer.beta] if layer.center else [])
            if kind == "BatchNormalization":
                ws += [layer.moving_mean, layer.moving_variance]
            if not _f32_weights(ws, keys) or any(tuple(w.shape) != (x[1],) for w in ws):
                return None
            g = keys[id(layer.gamma)] if layer.scale else "-"
            b = keys[id(layer.beta)] if layer.center else "-"
            if kind == "BatchNormalization":
                args = (f"batchnorm {{}} {float(layer.epsilon)!r} {g} {b} {keys[id(layer.moving_mean)]} "
                        f"{keys[id(layer.moving_variance)]}")
            else:
                args = f"layernorm {{}} {float(layer.epsilon)!r} {g} {b}"
        elif kind == "Rescaling":
            if not layer._scalar:
                return None
            args = f"rescaling {{}} {float(layer._scale)!r} {float(layer._offset)!r}"
        elif kind == "Concatenate":
            if any(len(s) != 2 for s in ins) or layer.axis not in (-1, 1):
                return None
            args = "concat {}"
        elif kind in _MERGE:
            if any(s != x for s in ins) or len(x) != 2:
                return None
            args = _MERGE[kind] + " {}"
        elif kind == "Normalization":
            if len(x) != 2 or layer.input_mean is not None or list(layer._keep_axis) != [1]:
                return None
            ws = [layer.adapt_mean, layer.adapt_variance]
            if not _f32_weights(ws, keys) or any(tuple(w.shape) != (x[1],) for w in ws):
                return None
            args = (f"normalize {{}} {float(_NORMALIZATION_EPSILON)!r} {int(layer.invert)} "
                    f"{keys[id(ws[0])]} {keys[id(ws[1])]}")
        elif kind == "Embedding":
            if len(x) != 2 or not _f32_weights([layer.embeddings], keys):
                return None
            if layer.mask_zero:
                # The mask is run only where it is exact: every reader of the output is a
                # GlobalAveragePooling1D (which averages the unmasked steps), none an output.
                readers = [s for s in model._steps if st.out_slots[0] in s.in_slots]
                if st.out_slots[0] in model._output_slots or not readers or any(
                        type(r.layer) is not getattr(L, "GlobalAveragePooling1D", None) for r in readers):
                    return None
                masked[st.out_slots[0]] = tname[st.in_slots[0]]
            args = f"embedding {{}} {layer.input_dim} {layer.output_dim} {keys[id(layer.embeddings)]}"
        else:  # global 1D pooling of (batch, steps, channels)
            if len(x) != 3 or layer.data_format != "channels_last" or layer.keepdims:
                return None
            if kind == "GlobalMaxPooling1D" and st.in_slots[0] in masked:
                return None
            mask = "," + masked[st.in_slots[0]] if st.in_slots[0] in masked else ""
            args = f"{'gap1d' if kind == 'GlobalAveragePooling1D' else 'gmp1d'} {{}}{mask} {x[1]}"
        out = st.out_slots[0]
        if f"t{out}" in in_names:
            return None
        tname[out], shapes[out], is_int[out] = f"t{out}", out_shape, False
        op, rest = args.split(" ", 1)
        lines.append(f"node t{out} {op} " + rest.format(",".join(tname[s] for s in st.in_slots)))
    for name, slot in zip(out_names, model._output_slots):
        if slot not in tname or is_int[slot]:
            return None
        lines.append(f"output {name} {tname[slot]}")
    return lines


def plan_extra(model, root=None, keys: Optional[Dict[int, str]] = None) -> Dict[str, bytes]:
    """``{PLAN_KEY: plan}`` for ``save_trackable(extra=...)``, or ``{}`` when there is no plan."""
    plan = plan_for(model, root, keys)
    return {PLAN_KEY: plan} if plan is not None else {}
