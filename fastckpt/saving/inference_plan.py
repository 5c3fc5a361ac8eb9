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

Version 3 is version 2 plus optional trailing arguments for tensors of rank 3 and more (Dense per
step, norms and softmax over any axis, broadcasting merges/PReLU/Rescaling, Concatenate inside
outer blocks) and a ``transpose`` op; a plan says version 3 only when one of its lines needs it.
Version 4 adds ``normalize_values`` (Normalization given ``mean=``/``variance=``: the constants on
the line), LayerNormalization over consecutive axes that are not last, and masked averages over a
mask merged from several ids; again only when a line needs it.
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
    in_shape = tuple(model.input_shape)
    if not all(type(layer) in (Dense, Dropout) for layer in model.layers) or len(in_shape) != 2:
        # Other layers, or inputs of rank 3 and more: a version 2 (or 3) plan of the chain.
        if keys is None:
            keys = {id(var): key for key, var in og.build_graph(model if root is None else root)[1]}
        try:
            chain = _Chain(model)
        except Exception:  # a layer whose output shape is unknown here: no plan
            return None
        return _finish(_safe_lines(chain, keys))
    if not isinstance(in_shape[1], int) or not 0 < in_shape[1] <= MAX_WIDTH:
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
    except (AttributeError, TypeError, ValueError, KeyError, IndexError):
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


def _dims(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def _prod(dims) -> int:
    return int(np.prod(dims, dtype=np.int64)) if len(dims) else 1


def _passes_mask(layer) -> bool:
    """Whether ``layer``'s output keeps its input's mask, as the Functional executor decides
    (fastckpt/models/functional.py, ``_store``): its own ``compute_mask`` when it overrides the
    base one (the normalization layers return the mask), else ``supports_masking``."""
    if type(layer).compute_mask is not L.Layer.compute_mask:
        return type(layer).__name__ in ("BatchNormalization", "LayerNormalization", "Normalization")
    return bool(getattr(layer, "supports_masking", False))


def _functional_lines(model, keys):
    """Version 2 lines for a Functional model (or a ``_Chain``), or None when a step has no exact
    C++ equivalent. Steps on rank-3 (and higher) tensors, broadcasting and transposes need the
    optional arguments of version 3; the plan says version 2 when it uses none of them."""
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
    lines = [f"{_PLAN_MAGIC} 2"]
    v3 = False
    v4 = False  # a line only version 4 runtimes read
    tname, shapes, is_int = {}, {}, {}
    row_floats = 0
    # slot -> (names of the int ids whose non-zero entries are the mask, steps) while a mask from
    # Embedding(mask_zero=True) travels with the tensor (steps None: a mask no pooling can read).
    # Merges AND their inputs' masks (as the Python layers do): the mask is then every id non-zero.
    masked = {}
    for name, slot, t in zip(in_names, model._input_slots, model.inputs):
        shape = tuple(t.shape)
        w = _width(shape)
        if w is None or slot in tname:
            return None
        kind = np.dtype(t.dtype).kind
        if kind not in "iuf":
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
        if _width(x) is None:
            return None
        rank = len(x)
        in_mask = [masked.get(s) for s in st.in_slots]
        merged_mask = None
        if any(in_mask) and kind == "Softmax":
            # Python adds (1 - mask) * -1e9 with NumPy broadcasting of the (batch, steps) mask
            # against the tensor: no built-in layer gives a masked tensor of that shape (it is
            # (batch, steps, features)), so the result would depend on the batch size: no plan.
            return None
        if any(in_mask) and multi:
            # AND of the masks that exist, when they are per step of inputs that keep their steps.
            known = [mk for mk in in_mask if mk]
            steps = {mk[1] for mk in known}
            if len(steps) != 1 or None in steps or any(len(s) != 3 or s[1] != x[1] for s in ins):
                return None
            if kind == "Concatenate" and int(layer.axis) % rank != 2:
                return None  # along the steps the masks are concatenated: not a mask of ids
            merged_mask = (tuple(dict.fromkeys(n for mk in known for n in mk[0])), steps.pop())
        args = None
        pre = None  # an extra line before the node (a transpose), as (name, line)
        node_ins = ",".join(tname[s] for s in st.in_slots)
        if kind == "Dense":
            if layer.activation not in ops.ACTIVATIONS:
                return None
            ws = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
            if not _f32_weights(ws, keys) or tuple(layer.kernel.shape) != (x[-1], layer.units):
                return None
            bias = keys[id(layer.bias)] if layer.use_bias else "-"
            args = f"dense {{}} {layer.units} {layer.activation} {keys[id(layer.kernel)]} {bias}"
            if rank > 2:  # each step of (batch, steps..., features)
                args, v3 = args + f" {x[-1]}", True
        elif kind in _IDENTITY:
            args = "identity {}"
        elif kind == "Activation":
            act = layer.activation if isinstance(layer.activation, str) else None
            if act not in ops.ACTIVATIONS:
                return None
            args = f"activation {{}} {act}"
            if act in ("softmax", "log_softmax") and rank > 2:  # over the last axis
                args, v3 = args + f" {x[-1]}", True
        elif kind == "ReLU":
            mx = "-" if layer.max_value is None else repr(float(layer.max_value))
            args = f"relu {{}} {float(layer.negative_slope)!r} {mx} {float(layer.threshold)!r}"
        elif kind == "LeakyReLU":
            args = f"relu {{}} {float(layer.alpha)!r} - 0.0"
        elif kind == "ELU":
            args = f"elu {{}} {float(layer.alpha)!r}"
        elif kind == "Softmax":
            axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) and len(layer.axis) == 1 else layer.axis
            if not isinstance(axis, (int, np.integer)) or not -rank <= axis < rank or axis % rank == 0:
                return None
            a = int(axis) % rank
            args = "softmax {}"
            if rank > 2:
                args, v3 = args + f" {x[a]} {_prod(x[a + 1:])}", True
        elif kind == "PReLU":
            ashape = tuple(layer.alpha.shape)
            if len(ashape) != rank - 1 or any(d != 1 and d != f for d, f in zip(ashape, x[1:])) \
                    or not _f32_weights([layer.alpha], keys):
                return None
            args = f"prelu {{}} {keys[id(layer.alpha)]}"
            if ashape != tuple(x[1:]) or rank > 2:  # shared axes, or alpha of several dims
                args, v3 = args + f" {_dims(x[1:])} {_dims(ashape)}", True
        elif kind in ("BatchNormalization", "LayerNormalization"):
            axes = sorted(int(a) % rank for a in np.atleast_1d(layer.axis))
            if not axes or axes[0] == 0 or len(set(axes)) != len(axes):
                return None
            if kind == "BatchNormalization":
                if len(axes) != 1:
                    return None
                n, inner = x[axes[0]], _prod(x[axes[0] + 1:])
            else:  # normalized over a block of consecutive axes (version 4 when not trailing)
                if axes != list(range(axes[0], axes[-1] + 1)):
                    return None
                n, inner = _prod(x[axes[0]:axes[-1] + 1]), _prod(x[axes[-1] + 1:])
            ws = ([layer.gamma] if layer.scale else []) + ([layer.beta] if layer.center else [])
            if kind == "BatchNormalization":
                ws += [layer.moving_mean, layer.moving_variance]
            if not _f32_weights(ws, keys) or any(_prod(w.shape) != n for w in ws):
                return None
            g = keys[id(layer.gamma)] if layer.scale else "-"
            b = keys[id(layer.beta)] if layer.center else "-"
            if kind == "BatchNormalization":
                args = (f"batchnorm {{}} {float(layer.epsilon)!r} {g} {b} {keys[id(layer.moving_mean)]} "
                        f"{keys[id(layer.moving_variance)]}")
                if rank > 2 or axes != [1]:
                    args, v3 = args + f" {n} {inner}", True
            else:
                args = f"layernorm {{}} {float(layer.epsilon)!r} {g} {b}"
                if inner > 1:
                    args, v4 = args + f" {n} {inner}", True
                elif rank > 2:
                    args, v3 = args + f" {n}", True
        elif kind == "Rescaling":
            if layer._scalar:
                args = f"rescaling {{}} {float(layer._scale)!r} {float(layer._offset)!r}"
            else:  # arrays broadcast against each sample (NumPy's rules, batch axis of 1 allowed)
                sc = np.asarray(layer._scale, np.float32)
                of = np.asarray(layer._offset, np.float32)
                full = pshape = np.broadcast_shapes(sc.shape, of.shape)
                per = tuple(x[1:])
                if len(pshape) > len(per):
                    if len(pshape) != len(per) + 1 or pshape[0] != 1:
                        return None
                    pshape = pshape[1:]
                pshape = (1,) * (len(per) - len(pshape)) + tuple(pshape)
                if any(p != 1 and p != d for p, d in zip(pshape, per)):
                    return None
                lists = [",".join(repr(float(v)) for v in np.broadcast_to(a, full).reshape(pshape).ravel())
                         for a in (sc, of)]
                args, v3 = f"rescaling {{}} {lists[0]} {lists[1]} {_dims(per)} {_dims(pshape)}", True
        elif kind == "Concatenate":
            a = int(layer.axis) % rank
            if a == 0 or any(len(s) != rank for s in ins):
                return None
            outer = _prod(x[1:a])
            args = "concat {}"
            if outer > 1:
                args, v3 = args + f" {outer}", True
        elif kind in _MERGE:
            # Broadcasting as tf.keras: lower ranks get axes of 1 after the batch axis.
            orank = len(out_shape)
            padded = [(1,) * (orank - len(s)) + tuple(s[1:]) for s in ins]
            if any(len(s) > orank for s in ins):
                return None
            args = _MERGE[kind] + " {}"
            if any(p != tuple(out_shape[1:]) for p in padded):  # broadcasting (dims of 1)
                args, v3 = args + " " + ",".join(_dims(p) for p in padded), True
        elif kind == "Normalization":
            keep = list(layer._keep_axis)
            if keep and keep != list(range(keep[0], keep[-1] + 1)):
                return None
            n = _prod([x[d] for d in keep])
            inner = _prod(x[keep[-1] + 1:]) if keep else _prod(x[1:])
            if layer.input_mean is not None:
                # Constants given to the constructor are not in the checkpoint: the line carries
                # them (version 4), when they fit a line and are finite.
                stats = [np.asarray(v, np.float32).reshape(-1) for v in layer._stats()]
                if any(v.size != n or not np.all(np.isfinite(v)) for v in stats) or np.any(stats[1] < 0):
                    return None
                lists = [",".join(repr(float(v)) for v in a) for a in stats]
                args, v4 = (f"normalize_values {{}} {float(_NORMALIZATION_EPSILON)!r} {int(layer.invert)} "
                            f"{lists[0]} {lists[1]} {n} {inner}"), True
            else:
                args = None
            ws = [] if args else [layer.adapt_mean, layer.adapt_variance]
            if args:
                pass
            elif not _f32_weights(ws, keys) or any(_prod(w.shape) != n for w in ws):
                return None
            else:
                args = (f"normalize {{}} {float(_NORMALIZATION_EPSILON)!r} {int(layer.invert)} "
                        f"{keys[id(ws[0])]} {keys[id(ws[1])]}")
                if rank > 2 or keep != [1]:
                    args, v3 = args + f" {n} {inner}", True
        elif kind == "Embedding":
            if not _f32_weights([layer.embeddings], keys):
                return None
            args = f"embedding {{}} {layer.input_dim} {layer.output_dim} {keys[id(layer.embeddings)]}"
        else:  # global 1D pooling of (batch, steps, channels)
            if rank != 3:
                return None
            steps = x[1]
            src = tname[st.in_slots[0]]
            if layer.data_format == "channels_first":  # (batch, channels, steps): transpose first
                if in_mask[0]:
                    return None
                steps, v3 = x[2], True
                tr = f"t{st.out_slots[0]}c"
                if tr in in_names:
                    return None
                pre = (tr, f"node {tr} transpose {src} {x[1]} {x[2]}")
                src = tr
            elif layer.data_format != "channels_last":
                return None
            mask = ""
            if kind == "GlobalAveragePooling1D" and in_mask[0]:
                ids_names, ids_steps = in_mask[0]
                if ids_steps != steps:
                    return None
                mask = "," + ",".join(ids_names)
                if len(ids_names) > 1:  # a merged mask: every id non-zero (version 4)
                    v4 = True
            # GlobalMaxPooling1D takes no mask (as Keras 2): it pools every step.
            args = f"{'gap1d' if kind == 'GlobalAveragePooling1D' else 'gmp1d'} {{}} {steps}"
            node_ins = src + mask
        out = st.out_slots[0]
        if f"t{out}" in in_names:
            return None
        # The mask after this step.
        if kind == "Embedding" and layer.mask_zero:
            ids = ins[0]
            masked[out] = ((tname[st.in_slots[0]],), ids[1] if len(ids) == 2 else None)
        elif merged_mask:
            masked[out] = merged_mask
        elif in_mask[0] and not multi and kind not in ("GlobalAveragePooling1D", "GlobalMaxPooling1D") and _passes_mask(layer):
            masked[out] = in_mask[0]
        if pre is not None:
            row_floats += _width(x)
            if row_floats > MAX_ROW_FLOATS:
                return None
            lines.append(pre[1])
        tname[out], shapes[out], is_int[out] = f"t{out}", out_shape, False
        op, rest = args.split(" ", 1)
        lines.append(f"node t{out} {op} " + rest.format(node_ins))
    for name, slot in zip(out_names, model._output_slots):
        if slot not in tname or is_int[slot]:
            return None
        lines.append(f"output {name} {tname[slot]}")
    if v4:
        lines[0] = f"{_PLAN_MAGIC} 4"
    elif v3:
        lines[0] = f"{_PLAN_MAGIC} 3"
    return lines


def plan_extra(model, root=None, keys: Optional[Dict[int, str]] = None) -> Dict[str, bytes]:
    """``{PLAN_KEY: plan}`` for ``save_trackable(extra=...)``, or ``{}`` when there is no plan."""
    plan = plan_for(model, root, keys)
    return {PLAN_KEY: plan} if plan is not None else {}
