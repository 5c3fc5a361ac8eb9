"""The fused path of ``fit`` for graphs: whole epochs of a Functional model (or a Sequential one
beyond Dense/Dropout) in C++ (``kernels/graph_trainer.h``).

Eligible: every step a built-in layer among ``Dense`` (any rank), ``Dropout``,
``Activation``, ``BatchNormalization`` (one feature axis), ``LayerNormalization`` (trailing axes),
``Normalization``, ``Rescaling``, ``Embedding`` (on an integer model input; ``mask_zero`` masks
followed as ``_apply_masks`` says), ``Flatten``/``Reshape``, ``Concatenate`` (not the batch axis),
``Add``/``Subtract``/``Multiply``/``Average``/``Maximum``/``Minimum``,
``GlobalAveragePooling1D``/``GlobalMaxPooling1D`` (either data format), ``ReLU``,
``LeakyReLU``, ``ELU``, ``PReLU``, ``Softmax`` (not over the batch axis), ``GaussianNoise``,
``GaussianDropout`` and ``AlphaDropout``, with every shape known but the batch size; per output
(any number, each of rank 2) the loss sparse categorical, categorical or binary cross-entropy,
MSE or MAE, with any loss weight and sample weights (``class_weight`` too); the optimizer as for
the chain trainer (``fastckpt.training.fused``). One kind of accuracy metric per output is
counted natively (``_loss_config``); any other metric is updated by the Trainer, batch by batch,
from the outputs the native loop records.
Anything else returns None: the layer-by-layer path, which runs the same kernels in the same order
with the same gradient sums, so both give bit-identical weights (tests/test_fused_graph.py).
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional

import numpy as np

from fastckpt import losses as losses_mod, metrics as metrics_mod, ops
from fastckpt.layers.activation import Activation
from fastckpt.layers.advanced_activations import ELU, LeakyReLU, PReLU, ReLU, Softmax
from fastckpt.layers.base import Layer, call_accepts
from fastckpt.layers.dense import Dense
from fastckpt.layers.dropout import Dropout
from fastckpt.layers.embedding import Embedding
from fastckpt.layers.merge import (Add, Average, Concatenate, Maximum, Minimum, Multiply,
                                   Subtract)
from fastckpt.layers.noise import AlphaDropout, GaussianDropout, GaussianNoise
from fastckpt.layers.normalization import (_BACKEND_EPSILON, BatchNormalization,
                                           LayerNormalization, Normalization)
from fastckpt.layers.pooling import GlobalAveragePooling1D, GlobalMaxPooling1D
from fastckpt.layers.rescaling import Rescaling
from fastckpt.layers.reshaping import Flatten, Reshape

__all__ = ["GraphForward", "GraphFusedTrainer", "build_graph_forward", "build_graph_fused"]

_MERGES = (Add, Subtract, Multiply, Average, Maximum, Minimum)
# The graph-protocol implementations whose steps the native loop reproduces.
_FUNCTIONAL_IMPL = "Functional._forward_train"
_CHAIN_IMPLS = ("Model._forward_train", "Sequential._forward_train")


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def _known(shape) -> bool:
    return shape is not None and len(shape) >= 1 and all(
        isinstance(d, (int, np.integer)) and d > 0 for d in shape[1:])


def _plan(model) -> Optional[Dict[str, Any]]:
    """The model's steps as plain data (``Functional._fused_plan``; a Sequential chain as one
    step per layer), or None for any other graph protocol."""
    impl = getattr(getattr(type(model), "_forward_train", None), "__qualname__", None)
    if impl == _FUNCTIONAL_IMPL:
        return model._fused_plan()
    if impl not in _CHAIN_IMPLS or not getattr(model, "_is_layer_chain", False):
        return None
    if getattr(model, "_is_subclassed", lambda: False)() or len(model.output_names) != 1:
        return None
    shape = tuple(model.input_shape)
    shapes, steps = [shape], []
    for i, layer in enumerate(model.layers):
        try:
            shape = tuple(layer.compute_output_shape(shape))
        except Exception:  # an unknown shape rule: the layer-by-layer path
            return None
        shapes.append(shape)
        steps.append({"layer": layer, "in": [i], "out": [i + 1], "training": None, "kwargs": {},
                      "shared": False, "multi_in": False, "key": id(layer)})
    uses: Dict[int, int] = {}
    for st in steps:
        uses[id(st["layer"])] = uses.get(id(st["layer"]), 0) + 1
    for st in steps:
        st["shared"] = uses[id(st["layer"])] > 1
    return {"n_slots": len(shapes), "inputs": [0], "outputs": [len(shapes) - 1],
            "shapes": shapes, "steps": steps}


def _logits_keys(model, plan, logits_layers) -> set:
    """The keys of the steps whose activation the losses take over (``logits_layers``: the
    Trainer's output layers left without their activation)."""
    if not logits_layers:
        return set()
    if hasattr(model, "_logits_steps"):
        return set(model._logits_steps(tuple(logits_layers)))
    return {st["key"] for st in plan["steps"] if any(st["layer"] is l for l in logits_layers)}


def _grads(layer) -> Optional[List[np.ndarray]]:
    """The layer's gradient buffers, one per trainable weight (None if that does not hold)."""
    grads = layer._grad_buffers()
    tw = layer.trainable_weights
    if len(grads) != len(tw) or any(g.shape != w.shape for g, w in zip(grads, tw)):
        return None
    return list(grads)


def _step_spec(st, shapes, is_int, logits: bool, inference: bool = False
               ) -> Optional[Dict[str, Any]]:
    """One step as the native trainer's dict, or None when it has no native equivalent.
    ``inference``: for predict's forward only (no gradient buffers)."""
    layer = st["layer"]
    cls = type(layer)
    if st["kwargs"] or len(st["out"]) != 1:
        return None
    ins, out = st["in"], st["out"][0]
    in_shapes = [shapes[s] for s in ins]
    out_shape = shapes[out]
    if cls is not Embedding and any(is_int[s] for s in ins):
        return None
    multi = cls is Concatenate or cls in _MERGES
    if multi != bool(st["multi_in"]) or (not multi and len(ins) != 1):
        return None
    grads = [] if inference else _grads(layer)
    if grads is None:
        return None
    spec: Dict[str, Any] = {"in": list(ins), "out": out, "grads": grads,
                            "grad_sizes": [int(g.size) for g in grads],
                            "has_weights": bool(grads)}
    rank = len(in_shapes[0])
    if cls is Dense:
        act = "linear" if logits else layer.activation
        if rank < 2 or act not in ops.ACTIVATIONS or layer.activity_regularizer is not None:
            return None
        if grads and len(grads) != (2 if layer.use_bias else 1):
            return None
        # Rank > 2: every position of a sample is a row of the one GEMM, as the layer reshapes.
        spec.update(kind="dense", K=int(layer.kernel.shape[0]), N=int(layer.units),
                    mid=_prod(in_shapes[0][1:-1]),
                    act=ops.ACTIVATIONS[act], kernel=layer.kernel.value,
                    bias=layer.bias.value if layer.use_bias else None)
    elif cls is Dropout:
        if getattr(layer, "_global_rows", None) is not None:
            return None
        spec.update(kind="dropout", rate=float(layer.rate))
    elif cls is Activation:
        if rank < 2 or layer.activation not in ops.ACTIVATIONS:
            return None
        spec.update(kind="activation", act=ops.ACTIVATIONS[layer.activation],
                    cols=int(in_shapes[0][-1]))
    elif cls is BatchNormalization:
        ax = getattr(layer, "_ax", None)
        if ax is None or list(layer.axis) != [ax] or not 1 <= ax < rank:
            return None
        # A non-last axis: the kernels run on the layer's moveaxis copy (outer, cols, inner ->
        # outer, inner, cols per sample); tf.keras' fused kernel (Bessel) for rank 4/5 on axis
        # 1 or last, unless a mask reaches it (_apply_masks).
        dims = in_shapes[0]
        spec.update(kind="batchnorm", cols=int(dims[ax]), outer=_prod(dims[1:ax]),
                    inner=_prod(dims[ax + 1:]),
                    gamma=layer.gamma.value if layer.scale else None,
                    beta=layer.beta.value if layer.center else None,
                    epsilon=float(layer.epsilon), momentum=float(layer.momentum),
                    moving_mean=layer.moving_mean.value,
                    moving_variance=layer.moving_variance.value,
                    bessel=rank in (4, 5) and ax in (1, rank - 1),
                    trainable=bool(layer.trainable))
    elif cls is LayerNormalization:
        axes = list(layer.axis)
        if not axes or axes != list(range(rank - len(axes), rank)) or 0 in axes:
            return None
        spec.update(kind="layernorm", cols=_prod(layer._param_shape),
                    gamma=layer.gamma.value.reshape(-1) if layer.scale else None,
                    beta=layer.beta.value.reshape(-1) if layer.center else None,
                    epsilon=float(layer.epsilon))
        spec["grads"] = [g.reshape(-1) for g in grads]
    elif cls is Embedding:
        # A mask only where _apply_masks can follow it (a Functional plan).
        if (layer.mask_zero and "fwd_takes_mask" not in st) or not is_int[ins[0]]:
            return None
        spec.update(kind="embedding", vocab=int(layer.input_dim), dim=int(layer.output_dim),
                    table=layer.embeddings.value)
    elif cls is Flatten:
        if layer._permuted(rank):
            return None
        spec.update(kind="alias")
    elif cls is Reshape:
        spec.update(kind="alias")
    elif cls is Concatenate:
        out_rank = len(out_shape)
        if any(len(s) != out_rank for s in in_shapes) or out_rank < 2 \
                or not -out_rank <= layer.axis < out_rank or layer.axis % out_rank == 0:
            return None
        # Along axis a: per sample, mid blocks of each input's trailing a.. elements in turn.
        ax = layer.axis % out_rank
        spec.update(kind="concat", mid=_prod(out_shape[1:ax]),
                    widths=[_prod(s[ax:]) for s in in_shapes])
    elif cls in _MERGES:
        spec.update(kind="merge", op=ops.MERGE_OPS[layer._op])
        out_dims = tuple(int(d) for d in out_shape[1:])
        if any(tuple(s[1:]) != out_dims for s in in_shapes):
            # Broadcasting inputs, as the layer: lower ranks get axes of 1 after the batch
            # axis, then each output element reads its input element through an index.
            bidx, b_in_n = [], []
            for s in in_shapes:
                dims = tuple(int(d) for d in s[1:])
                if dims == out_dims:
                    bidx.append(None)
                    b_in_n.append(0)
                    continue
                padded = (1,) * (len(out_dims) - len(dims)) + dims
                flat = np.arange(_prod(dims), dtype=np.int64).reshape(padded)
                bidx.append(np.ascontiguousarray(np.broadcast_to(flat, out_dims).reshape(-1)))
                b_in_n.append(_prod(dims))
            spec.update(bidx=bidx, b_in_n=b_in_n, b_out_n=_prod(out_dims))
    elif cls in (GlobalAveragePooling1D, GlobalMaxPooling1D):
        if rank != 3:
            return None
        # channels_first: the layer pools its (batch, steps, channels) transposed copy.
        cf = layer.data_format == "channels_first"
        dims = in_shapes[0]
        spec.update(kind="gap1d" if cls is GlobalAveragePooling1D else "gmp1d",
                    T=int(dims[2] if cf else dims[1]), C=int(dims[1] if cf else dims[2]),
                    channels_first=cf)
    elif cls is ReLU:
        spec.update(kind="relu", negative_slope=float(layer.negative_slope),
                    max_value=None if layer.max_value is None else float(layer.max_value),
                    threshold=float(layer.threshold))
    elif cls is LeakyReLU:
        spec.update(kind="relu", negative_slope=float(layer.alpha), max_value=None, threshold=0.0)
    elif cls is ELU:
        spec.update(kind="elu", alpha=float(layer.alpha))
    elif cls in (GaussianNoise, GaussianDropout, AlphaDropout):
        if getattr(layer, "noise_shape", None) is not None:
            return None
        rate = float(getattr(layer, "rate", 0.0))
        stddev = float(layer.stddev) if cls is GaussianNoise else (
            math.sqrt(rate / (1.0 - rate)) if 0.0 < rate < 1.0 else 0.0)
        spec.update(kind="noise", noise=(GaussianNoise, GaussianDropout, AlphaDropout).index(cls),
                    rate=rate, stddev=stddev)
    elif cls is Softmax:
        axis = layer.axis % rank if -rank <= layer.axis < rank else None
        if axis is None or axis == 0:
            return None
        dims = in_shapes[0]
        spec.update(kind="softmax", outer=_prod(dims[1:axis]), n=int(dims[axis]),
                    inner=_prod(dims[axis + 1:]))
    elif cls is PReLU:
        alpha = layer.alpha.value
        if alpha.dtype != np.float32 or not alpha.flags.c_contiguous:
            return None
        try:
            idx = layer._index(np.empty((1,) + tuple(in_shapes[0][1:]), np.float32))
        except ValueError:
            return None
        spec.update(kind="prelu", alpha=alpha.reshape(-1), idx=idx, alpha_size=int(alpha.size),
                    per=int(idx.size))
        spec["grads"] = [g.reshape(-1) for g in grads]
    elif cls is Normalization:
        extra = _normalization_spec(layer, in_shapes[0])
        if extra is None:
            return None
        spec.update(extra)
    elif cls is Rescaling:
        extra = _rescaling_spec(layer, in_shapes[0])
        if extra is None:
            return None
        spec.update(extra)
    else:
        return None
    return spec


def _f32_flat(a) -> Optional[np.ndarray]:
    """``a`` as a flat view of its float32 C-contiguous memory (None when it is not such; a
    NumPy scalar, a constant, as a one-element copy)."""
    if isinstance(a, np.float32):
        return np.array([a], np.float32)
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        return None
    return a.reshape(-1)


def _normalization_spec(layer, dims) -> Optional[Dict[str, Any]]:
    """Normalization as (rows, cols) with per-column statistics, as ``Normalization._flat``
    views it: the columns are the trailing block from the first kept axis (the last axis for
    ``axis=None``), each column reading statistic ``idx[j]`` of the layer's own arrays (so
    ``adapt`` or ``load_weights`` in place is seen at the next forward)."""
    if not layer.built or len(dims) < 2:
        return None
    mean, var = layer._stats()
    mean, var = _f32_flat(mean), _f32_flat(var)
    if mean is None or var is None or mean.size != var.size or mean.size == 0:
        return None
    keep = list(layer._keep_axis)
    if keep:
        built = layer._built_shape
        if len(dims) != len(built) or keep[0] == 0 or \
                any(dims[d] != built[d] for d in keep):
            return None
        k = keep[0]
        block = tuple(int(d) for d in dims[k:])
        idx = np.broadcast_to(np.arange(mean.size, dtype=np.int64).reshape(
            layer._broadcast_shape[k:]), block).reshape(-1)
    else:
        idx = np.zeros(int(dims[-1]), np.int64)
    return {"kind": "normalize", "cols": int(idx.size), "stat_size": int(mean.size),
            "mean": mean, "variance": var, "idx": np.array(idx, np.int64),  # own copy
            "epsilon": float(_BACKEND_EPSILON), "invert": bool(layer.invert)}


def _rescaling_spec(layer, dims) -> Optional[Dict[str, Any]]:
    """Rescaling: scalars through the layer's own kernel, else scale and offset broadcast to one
    sample (refused when they would broadcast the input to more elements)."""
    if layer._scalar:
        return {"kind": "rescale", "scale": None, "offset": None,
                "scalar_scale": float(layer._scale), "scalar_offset": float(layer._offset)}
    sample = (1,) + tuple(int(d) for d in dims[1:])
    scale = np.asarray(layer._scale, np.float32)
    offset = np.asarray(layer._offset, np.float32)
    try:
        if tuple(np.broadcast_shapes(sample, scale.shape, offset.shape)) != sample:
            return None
    except ValueError:
        return None
    return {"kind": "rescale", "per": _prod(sample),
            "scale": np.array(np.broadcast_to(scale, sample).reshape(-1), np.float32),
            "offset": np.array(np.broadcast_to(offset, sample).reshape(-1), np.float32)}


# Layers whose forward_train takes a mask and ignores it (the mask passes on as compute_mask says).
_MASK_IGNORING = (Activation, ReLU, LeakyReLU, ELU, PReLU, GaussianNoise, GaussianDropout,
                  AlphaDropout, GlobalMaxPooling1D, LayerNormalization, Normalization,
                  Concatenate) + _MERGES
# Layers whose compute_mask returns the (single) input mask as it is.
_MASK_PASSING = (BatchNormalization, LayerNormalization, Normalization)


def _specs(plan, shapes, is_int, logits,
           inference: bool = False) -> Optional[List[Dict[str, Any]]]:
    """Every step's native spec with the masks applied, or None when a step has no native form
    (``logits``: the keys of the steps whose activation the loss takes over)."""
    specs = []
    for st in plan["steps"]:
        if "fwd_takes_mask" not in st:
            # A Sequential chain: Model._forward_train passes a mask to a layer that supports
            # masking and whose forward_train takes one (the masks then follow as in a graph).
            layer = st["layer"]
            st["fwd_takes_mask"] = bool(getattr(layer, "supports_masking", False)) and \
                call_accepts(layer.forward_train)[1]
        spec = _step_spec(st, shapes, is_int, st["key"] in logits, inference=inference)
        if spec is None:
            return None
        specs.append(spec)
    return specs if _apply_masks(plan, specs, inference) else None


def _apply_masks(plan, specs, inference: bool = False) -> bool:
    """Follows Embedding(mask_zero=True) masks through the plan as Functional._store does and
    gives each step that reads one (GlobalAveragePooling1D, BatchNormalization on the last axis)
    its ``mask_slots``: the integer slots whose ``ids != 0`` are and-ed (the merges and a
    last-axis Concatenate combine masks so). False when a mask reaches a step the native loop
    cannot apply it to (Softmax, a Concatenate along another axis, a mask of another shape, a
    training output: the layer-by-layer path)."""
    base = Layer.compute_mask
    shapes = plan["shapes"]
    src: Dict[int, frozenset] = {}  # slot -> the integer slots whose ids != 0 and-ed is its mask

    def fits(slot, ids) -> bool:  # one id per position of every axis but the last
        return all(tuple(shapes[i][1:]) == tuple(shapes[slot][1:-1]) for i in ids)

    for st, spec in zip(plan["steps"], specs):
        layer = st["layer"]
        cls = type(layer)
        ms = [src.get(s) for s in st["in"]]
        found = [m for m in ms if m is not None]
        out: Optional[frozenset] = None
        if cls is Embedding and layer.mask_zero:
            if found:  # ids carrying a mask: not a plan the native loop knows
                return False
            out = frozenset(st["in"][:1])
        elif found:
            if "fwd_takes_mask" not in st or len(st["out"]) != 1 or spec.get("bidx"):
                return False
            if any(not fits(s, m) for s, m in zip(st["in"], ms) if m is not None):
                return False
            # What forward_train does with the mask.
            if st["fwd_takes_mask"]:
                if cls is GlobalAveragePooling1D or (cls is BatchNormalization
                                                    and spec.get("inner", 1) == 1):
                    if cls is GlobalAveragePooling1D and spec.get("channels_first"):
                        return False
                    spec["mask_slots"] = sorted(found[0])
                    if cls is BatchNormalization:
                        spec["bessel"] = False  # _var_correction: none under a mask
                elif cls not in _MASK_IGNORING:
                    return False
            # What compute_mask gives the output (_store).
            overrides = cls.compute_mask is not base
            if cls in (GlobalAveragePooling1D, GlobalMaxPooling1D):
                out = None
            elif cls in _MERGES or (cls is Concatenate
                                    and layer.axis % len(shapes[st["out"][0]])
                                    == len(shapes[st["out"][0]]) - 1):
                out = frozenset().union(*found)  # the and of the inputs' masks
            elif overrides and cls not in _MASK_PASSING:
                return False
            elif (overrides or layer.supports_masking) and len(st["in"]) == 1:
                out = found[0]
            elif not overrides and not layer.supports_masking:
                out = None
            else:
                return False
        if out is not None:
            if not fits(st["out"][0], out):
                return False
            for s in st["out"]:
                src[s] = out
    # A mask at an output changes nothing predict returns; training leaves it to the
    # layer-by-layer path (the loss may come to weigh it).
    return inference or not any(s in src for s in plan["outputs"])


def _distinct_layers(plan) -> list:
    layers: list = []
    for st in plan["steps"]:
        if not any(st["layer"] is lay for lay in layers):
            layers.append(st["layer"])
    return layers


def _link_steps(plan, specs, layers) -> List[Dropout]:
    """Completes the step dicts (layer index, shared, the ``training`` of fit and of inference,
    random-layer state index); returns the random layers (Dropout and the noise layers, each
    with ``rng_seed``/``rng_offset``) in state order."""
    dropouts: List[Dropout] = []
    for st, spec in zip(plan["steps"], specs):
        layer = st["layer"]
        spec["layer"] = next(i for i, lay in enumerate(layers) if lay is layer)
        spec["shared"] = bool(st["shared"])
        tr = st["training"]
        spec["train_active"] = True if tr is None else bool(tr)
        spec["eval_active"] = False if tr is None else bool(tr)
        if spec["kind"] in ("dropout", "noise"):
            if not any(layer is d for d in dropouts):
                dropouts.append(layer)
            spec["rng"] = next(i for i, d in enumerate(dropouts) if d is layer)
    return dropouts


def _int_consumers(plan, is_int) -> list:
    """Per model input: the Embedding layers reading it when it holds ids, else None."""
    out = []
    for s in plan["inputs"]:
        out.append([st["layer"] for st in plan["steps"] if s in st["in"]] if is_int[s] else None)
    return out


def _prepare_ids(xs, int_consumers) -> list:
    """The inputs as the native loop reads them: ids checked by every Embedding reading them
    (the layer's own error otherwise) and made int32; other inputs as they are."""
    prepared = []
    for x, consumers in zip(xs, int_consumers):
        if consumers is None:
            prepared.append(x)
            continue
        ids = x
        for layer in consumers:
            ids = layer._ids(x)
        prepared.append(ids)
    return prepared


class GraphForward:
    """predict's native forward of one model: each call runs a pass of rows through the whole
    graph in inference mode, in one native call, bit for bit as ``model._forward_train(xs,
    False)``; needs no compile (no optimizer, loss or gradient buffers)."""

    def __init__(self, impl, key, dropouts, int_consumers):
        self.impl = impl
        self.key = key
        self.dropouts = dropouts
        self.int_consumers = int_consumers

    def run(self, xs, outs) -> None:
        """The model's outputs for the rows of ``xs`` (one array per input, as ``predict``
        prepared them) written into ``outs`` (one float32 array per output, same rows), as one
        pass. Embedding ids are checked before any native work."""
        prepared = _prepare_ids(xs, self.int_consumers)
        n = int(xs[0].shape[0])
        if n == 0:
            return
        if self.dropouts:  # a Dropout called with training=True draws in predict too
            self.impl.set_rng_state([(d.rng_seed, d.rng_offset) for d in self.dropouts])
        try:
            self.impl.predict(prepared, n, n, outs)
        finally:
            for d, (_, off) in zip(self.dropouts, self.impl.rng_state()):
                d.rng_offset = int(off)


def build_graph_forward(model, xs, cached: Optional[GraphForward] = None
                        ) -> Optional[GraphForward]:
    """predict's native forward for ``model`` on input arrays like ``xs`` (their dtypes and
    trailing shapes), or None when some step has no native implementation (the layer-by-layer
    path). ``cached``, one built before, is returned when nothing it depends on has changed."""
    if os.environ.get("FASTCKPT_FUSED", "1") == "0":
        return None
    plan = _plan(model)
    if plan is None or len(plan["inputs"]) != len(xs) or not plan["steps"]:
        return None
    shapes = plan["shapes"]
    if not all(_known(s) for s in shapes):
        return None
    is_int = [False] * plan["n_slots"]
    for s, x in zip(plan["inputs"], xs):
        if not isinstance(x, np.ndarray) or x.ndim < 1 or x.shape[1:] != tuple(shapes[s][1:]):
            return None
        if x.dtype.kind in "iu":
            is_int[s] = True
        elif x.dtype != np.float32 or not x.flags.c_contiguous:
            return None
    if any(is_int[s] for s in plan["outputs"]):
        return None
    layers = _distinct_layers(plan)
    key = (id(model), tuple(is_int),
           tuple((id(lay), lay.trainable, tuple(w.value.ctypes.data for w in lay.weights))
                 for lay in layers))
    if cached is not None and cached.key == key:
        return cached
    specs = _specs(plan, shapes, is_int, (), inference=True)
    if specs is None:
        return None
    dropouts = _link_steps(plan, specs, layers)
    widths = [_prod(s[1:]) for s in shapes]
    impl = ops.make_graph_trainer(widths, [int(b) for b in is_int], plan["inputs"],
                                  plan["outputs"], [0] * plan["n_slots"], specs, len(layers),
                                  [(d.rng_seed, d.rng_offset) for d in dropouts], [], None,
                                  False, losses_mod.EPSILON)
    return GraphForward(impl, key, dropouts, _int_consumers(plan, is_int))


class GraphFusedTrainer:
    """The native graph trainer of one model, with the Python state it mirrors (the Dropout
    layers' RNG counters) and the input arrays it has been given.

    Per output: ``native[k]``, the compiled metrics the native loop counts (their matches come
    back in the totals), and ``record[k]``, whether the output's other metrics need its
    predictions (the loop then writes every batch's output into a buffer the Trainer replays
    them from, batch by batch)."""

    def __init__(self, model, impl, key, dropouts, int_consumers, native, record, widths):
        self.model = model
        self.impl = impl
        self.key = key
        self.dropouts = dropouts
        # Per model input: the Embedding layers reading it when it holds ids, else None.
        self.int_consumers = int_consumers
        self.native: List[list] = native
        self.record: List[bool] = record
        self.widths: List[int] = widths
        self._bound: Dict[int, tuple] = {}
        self._preds: Dict[tuple, np.ndarray] = {}

    def sync_in(self) -> None:
        """Python's dropout counters may have moved (layer-by-layer calls, a restored state)."""
        self.impl.set_rng_state([(d.rng_seed, d.rng_offset) for d in self.dropouts])

    def sync_out(self) -> None:
        for d, (_, off) in zip(self.dropouts, self.impl.rng_state()):
            d.rng_offset = int(off)

    def bind(self, xs) -> None:
        """Checks the model's input arrays once per call of ``fit``'s epoch or ``evaluate``
        (every id in range of every Embedding reading it: the layer's own ``ValueError``
        otherwise) and keeps them as the native loop reads them (ids as int32)."""
        prepared = _prepare_ids(xs, self.int_consumers)
        if len(self._bound) > 4:
            self._bound.clear()
        self._bound[id(xs[0])] = (xs[0], prepared)

    def _inputs(self, x0) -> list:
        entry = self._bound.get(id(x0))
        if entry is None or entry[0] is not x0:
            raise RuntimeError("GraphFusedTrainer: inputs were not bound (bind(xs) first)")
        return entry[1]

    def _pred_buffers(self, rows: int) -> list:
        """Per output: a buffer of ``rows`` predictions when its metrics replay them, else None
        (reused between calls of one size)."""
        out = []
        for k, rec in enumerate(self.record):
            if not rec:
                out.append(None)
                continue
            buf = self._preds.get((k, rows))
            if buf is None:
                if len(self._preds) > 8:
                    self._preds.clear()
                buf = self._preds[(k, rows)] = np.empty((rows, self.widths[k]), np.float32)
            out.append(buf)
        return out

    def train_steps(self, x0, ys, sws, order, batch_size: int, s0: int, s1: int,
                    snapshot=None):
        """Steps [s0, s1) of an epoch; ``x0`` is the first input array of a bound list, ``ys``
        and ``sws`` the targets and sample weights (None or float32) of every output. Returns
        ``(loss_sum, correct, seen, per-output loss sums, per-output matches, per-output
        prediction buffers or None)``. The graph trainer takes no checkpoint snapshot in its
        last step (``snapshot`` must be None)."""
        if snapshot is not None:
            raise ValueError("GraphFusedTrainer.train_steps: snapshots are the chain trainer's")
        it = self.model.optimizer.iterations.value
        n = int(x0.shape[0])
        rows = max(0, min(n, s1 * batch_size) - s0 * batch_size)
        preds = self._pred_buffers(rows)
        totals = self.impl.train_steps(self._inputs(x0), list(ys), list(sws), order, batch_size,
                                       s0, s1, it.reshape(1), preds)
        return tuple(totals) + (preds,)

    def evaluate(self, x0, ys, sws, batch_size: int):
        """Inference-mode totals (as ``train_steps``); a Dropout called with ``training=True``
        still draws, and its counter is read back here (the Trainer syncs only after training
        steps)."""
        preds = self._pred_buffers(int(x0.shape[0]))
        totals = self.impl.evaluate(self._inputs(x0), list(ys), list(sws), batch_size, preds)
        self.sync_out()
        return tuple(totals) + (preds,)


# Losses the graph trainer runs through a dense_loss kernel, and the metric each may count.
_DENSE_LOSSES = (losses_mod.BinaryCrossentropy, losses_mod.CategoricalCrossentropy,
                 losses_mod.MeanSquaredError, losses_mod.MeanAbsoluteError)
_METRIC_CODES = {metrics_mod.SparseCategoricalAccuracy: 1, metrics_mod.BinaryAccuracy: 2,
                 metrics_mod.CategoricalAccuracy: 3}
_METRIC_FNS = {metrics_mod.sparse_categorical_accuracy: 1, metrics_mod.binary_accuracy: 2,
               metrics_mod.categorical_accuracy: 3}


def _metric_code(metric):
    """(code, threshold) of a metric the native loop counts (the classes, or the functions a
    metric name wraps), else None."""
    code = _METRIC_CODES.get(type(metric))
    if code is None and type(metric) is metrics_mod.MeanMetricWrapper:
        code = _METRIC_FNS.get(getattr(metric, "_fn", None))
    if code is None:
        return None
    kwargs = dict(getattr(metric, "_fn_kwargs", {}))
    threshold = float(np.float32(kwargs.pop("threshold", 0.5))) if code == 2 else 0.5
    return None if kwargs else (code, threshold)


# Trainer._step's reductions: the loss value per row, the sum counted per row, the plain sum.
_REDUCTIONS = {"auto": 0, "sum_over_batch_size": 0, "sum": 1, "none": 2}


def _loss_config(model, k: int, fold: bool, out_width: int):
    """Output ``k``'s native loss and metric (one of ``make_graph_trainer``'s ``loss`` dicts)
    with the compiled metrics the native loop counts for it, or None when the layer-by-layer
    path must run the loss (another loss, or ``ignore_class``). ``fold``: the output
    layer's activation is left to the loss. Of the output's unweighted metrics, those of the
    first native kind are counted natively; any others read the recorded predictions."""
    comp = model._compiled
    loss = comp.losses[k]
    if loss is None or loss.reduction not in _REDUCTIONS:
        return None
    w = comp.loss_weights[k]
    weight = 1.0 if w is None else float(w)
    sparse = type(loss) is losses_mod.SparseCategoricalCrossentropy
    if sparse:
        if getattr(loss, "ignore_class", None) is not None:
            return None
    elif type(loss) not in _DENSE_LOSSES or getattr(loss, "axis", -1) not in (-1, 1):
        return None
    chosen, native = None, []
    for m in comp.metrics[k]:
        code = _metric_code(m)
        if code is None:
            continue
        if sparse:
            # The loss kernel counts arg-max matches on the output as it is: the metric class
            # does too (Trainer._update_metrics); the metric function reads activated outputs.
            if type(m) is not metrics_mod.SparseCategoricalAccuracy:
                continue
        elif code[0] == 1 or (code[0] == 2 and out_width != 1):
            continue  # one count per row: Trainer._add_totals counts a metric's values as rows
        if chosen is None:
            chosen = code
        if code == chosen:
            native.append(m)
    metric, threshold = chosen or (0, 0.5)
    record = len(native) < len(comp.metrics[k]) or bool(comp.weighted_metrics[k])
    from_logits = bool(fold or getattr(loss, "from_logits", False))
    if sparse:
        config = {"sparse": True, "kind": 0, "label_smoothing": 0.0, "metric": metric,
                  "threshold": 0.5, "fold": 0, "from_logits": from_logits, "weight": weight,
                  "reduction": _REDUCTIONS[loss.reduction]}
    else:
        act = loss.foldable_activation if fold else None
        config = {"sparse": False, "kind": ops.LOSS_KINDS[loss._kind],
                  "label_smoothing": float(getattr(loss, "label_smoothing", 0.0) or 0.0),
                  "metric": metric, "threshold": threshold,
                  "fold": ops.ACTIVATIONS[act] if act else 0, "from_logits": from_logits,
                  "weight": weight, "reduction": _REDUCTIONS[loss.reduction]}
    return config, native, record


def _targets_fit(loss_configs, ys, sws, n: int, widths) -> bool:
    """The targets and sample weights as the native loop reads them: int32 labels ``(n,)`` for
    the sparse loss, float32 ``(n, width)`` rows otherwise; float32 ``(n,)`` weights or None."""
    if ys is None or len(ys) != len(loss_configs):
        return False
    for cfg, y, w, width in zip(loss_configs, ys, sws if sws is not None else [None] * len(ys),
                                widths):
        if not isinstance(y, np.ndarray) or not y.flags.c_contiguous:
            return False
        if cfg["sparse"]:
            if y.dtype != np.int32 or y.shape != (n,):
                return False
        elif y.dtype != np.float32 or y.shape != (n, width):
            return False
        if w is not None and (not isinstance(w, np.ndarray) or w.dtype != np.float32
                              or w.shape != (n,) or not w.flags.c_contiguous):
            return False
    return True


def build_graph_fused(model, folds, logits_layers, xs, cached: Optional[GraphFusedTrainer] = None,
                      ys=None, sws=None) -> Optional[GraphFusedTrainer]:
    """A graph trainer for ``model`` on the input arrays ``xs`` (bound to it), or None when some
    piece has no native implementation. ``folds``: per output, whether its loss takes over the
    output layer's activation; ``logits_layers``: those layers (the Trainer's); ``ys``/``sws``:
    the targets and sample weights it will be given (checked to fit); ``cached``, a trainer
    built before, is reused when nothing it depends on has changed."""
    plan = _plan(model)
    if plan is None or len(plan["inputs"]) != len(xs):
        return None
    comp = model._compiled
    outs = plan["outputs"]
    if len(outs) != len(comp.losses) or len(set(outs)) != len(outs) or len(folds) != len(outs):
        return None
    shapes = plan["shapes"]
    if not all(_known(s) for s in shapes) or any(len(shapes[s]) != 2 for s in outs):
        return None
    if model.optimizer._fused_config() is None:
        return None
    configs = []
    for k, s in enumerate(outs):
        c = _loss_config(model, k, bool(folds[k]), int(shapes[s][1]))
        if c is None:
            return None
        configs.append(c)
    loss_configs = [c[0] for c in configs]
    n = int(xs[0].shape[0]) if xs else 0
    if not _targets_fit(loss_configs, ys, sws, n, [int(shapes[s][1]) for s in outs]):
        return None
    is_int = [False] * plan["n_slots"]
    for s, x in zip(plan["inputs"], xs):
        if not isinstance(x, np.ndarray) or x.shape != (n,) + tuple(shapes[s][1:]):
            return None
        if x.dtype.kind in "iu":
            is_int[s] = True
        elif x.dtype != np.float32 or not x.flags.c_contiguous:
            return None
    if any(s in plan["inputs"] for s in outs):
        return None
    opt = model.optimizer
    logits = _logits_keys(model, plan, logits_layers)
    layers = _distinct_layers(plan)
    key = (id(model), id(comp), id(opt), type(opt).__name__,
           tuple(tuple(sorted(c.items())) for c in loss_configs),
           tuple((tuple(id(m) for m in c[1]), c[2]) for c in configs),
           tuple(sorted(opt.get_config().items())), tuple(is_int), tuple(sorted(logits)),
           tuple((id(lay), lay.trainable, tuple(w.value.ctypes.data for w in lay.weights),
                  tuple(g.ctypes.data for g in lay._grad_buffers())) for lay in layers),
           tuple(s.value.ctypes.data for s in opt.variables))
    if cached is not None and cached.key == key:
        cached.bind(xs)
        return cached
    # Every int slot feeds Embeddings only (checked per step); a model output is float.
    specs = _specs(plan, shapes, is_int, logits)
    if specs is None:
        return None
    dropouts = _link_steps(plan, specs, layers)
    # Functional._needs_grad(False): a slot's gradient is wanted when something before it has
    # trainable weights.
    need = [False] * plan["n_slots"]
    for st in plan["steps"]:
        flag = bool(st["layer"].trainable_weights) or any(need[s] for s in st["in"])
        for s in st["out"]:
            need[s] = flag
    opt.build(model.trainable_weights)
    pairs = model._grads_and_vars()
    if not pairs:
        return None
    pair_grads = {id(g) for g, _ in pairs}
    for lay in layers:  # the buffers the steps write are the ones the optimizer reads
        if any(id(g) not in pair_grads for g in lay._grad_buffers()):
            return None
    variables = []
    for grad, var in pairs:
        slots = [opt.get_slot(var, s).value for s in opt.slot_names]
        slots += [None] * (3 - len(slots))
        variables.append({"size": int(var.value.size), "value": var.value, "grad": grad,
                          "slot0": slots[0], "slot1": slots[1], "slot2": slots[2]})
    widths = [_prod(s[1:]) for s in shapes]
    # The trainer-wide from_logits is unused: every loss dict carries its own.
    impl = ops.make_graph_trainer(widths, [int(b) for b in is_int], plan["inputs"], outs,
                                  [int(b) for b in need], specs, len(layers),
                                  [(d.rng_seed, d.rng_offset) for d in dropouts], variables,
                                  opt._fused_config(), False, losses_mod.EPSILON, loss_configs)
    trainer = GraphFusedTrainer(model, impl, key, dropouts, _int_consumers(plan, is_int),
                                [c[1] for c in configs], [c[2] for c in configs],
                                [int(shapes[s][1]) for s in outs])
    trainer.bind(xs)
    return trainer
