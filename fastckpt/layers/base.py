"""``Layer``: the unit of computation, its weights, its config, and its training protocol.

Built-in layers run their math in the native kernels. A layer written in Python implements
``call`` with NumPy (enough for inference) and, to be trained inside ``fit``, ``backward``.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fastckpt import backend, constraints, initializers, regularizers
from fastckpt.variables import Variable, aligned_empty

__all__ = ["Layer", "KerasTensor", "Node", "InputSpec", "is_symbolic", "flatten_structure",
           "call_accepts"]


def _as_shape(shape) -> Tuple[Optional[int], ...]:
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(None if d is None else int(d) for d in shape)


# --- symbolic tensors and the nodes that connect layers (the Functional API) -----------------
class KerasTensor:
    """A symbolic tensor: its shape (``None`` for unknown dimensions), dtype and name, and where
    it comes from: ``_keras_history = (layer, node_index, tensor_index)``. ``keras.Input``
    returns one; calling a layer on one returns more; ``keras.Model(inputs, outputs)`` reads the
    graph they describe."""

    def __init__(self, shape, dtype="float32", name: Optional[str] = None, history=None):
        self._shape = _as_shape(shape)
        self._dtype = np.dtype(dtype).name
        self.name = name
        self._keras_history = history
        self._keras_mask = None

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def node(self) -> "Node":
        layer, node_index, _ = self._keras_history
        return layer._inbound_nodes[node_index]

    @property
    def _input_layer(self):
        """The ``InputLayer`` this tensor is the input of (``Sequential.add(keras.Input(...))``)."""
        layer = self._keras_history[0] if self._keras_history else None
        return layer if getattr(layer, "_is_input_layer", False) else None

    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self!r} is symbolic: it has no values. Call a model built from it on "
                        f"data instead (model(x) or model.predict(x)).")

    def __len__(self):
        raise TypeError(f"{self!r} is symbolic and has no length")

    def __bool__(self) -> bool:  # ``x or default`` and ``if x:`` mean "given", not "non-empty"
        return True

    def _no_ops(self, *args, **kwargs):
        raise TypeError(f"{self!r}: arithmetic, indexing and NumPy functions on symbolic tensors "
                        f"are not supported (tf.keras wraps them in TFOpLambda layers, whose "
                        f"configs are code). Use layers: keras.layers.Add()([x, y]), Multiply, "
                        f"Concatenate, Reshape, Activation, or a custom Layer subclass.")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _no_ops
    __truediv__ = __rtruediv__ = __matmul__ = __rmatmul__ = __pow__ = __neg__ = _no_ops
    __getitem__ = __array_ufunc__ = __array_function__ = _no_ops

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"


class Node:
    """One call of a layer on symbolic tensors: ``inputs`` as given (one tensor, a list or a
    dict), ``outputs`` (a list), and the keyword arguments of the call."""

    def __init__(self, layer, inputs, outputs: List[KerasTensor], kwargs: Optional[Dict] = None):
        self.layer = layer
        self.inputs = inputs
        self.flat_inputs = flatten_structure(inputs) if inputs is not None else []
        self.outputs = list(outputs)
        self.kwargs = dict(kwargs or {})
        self.is_input = inputs is None
        nodes = layer.__dict__.setdefault("_inbound_nodes", [])
        index = len(nodes)
        layer._inbound_nodes.append(self)
        for i, t in enumerate(self.outputs):
            t._keras_history = (layer, index, i)

    @property
    def index(self) -> int:
        return next(i for i, n in enumerate(self.layer._inbound_nodes) if n is self)

    @property
    def parent_nodes(self) -> List["Node"]:
        return [t.node for t in self.flat_inputs]


class InputSpec:
    """What a layer accepts: ``ndim``, ``min_ndim``, ``max_ndim`` and ``axes`` ({axis: size}).
    Checked when the layer is called on symbolic tensors."""

    def __init__(self, dtype=None, shape=None, ndim=None, max_ndim=None, min_ndim=None,
                 axes=None, allow_last_axis_squeeze=False, name=None):
        self.dtype = dtype
        self.shape = _as_shape(shape)
        self.ndim = len(shape) if shape is not None else ndim
        self.max_ndim = max_ndim
        self.min_ndim = min_ndim
        self.axes = {int(k): v for k, v in (axes or {}).items()}
        self.name = name

    def check(self, layer_name: str, index: int, shape) -> None:
        shape = tuple(shape)
        where = f"Input {index} of layer {layer_name!r} is incompatible with the layer"
        if self.ndim is not None and len(shape) != self.ndim:
            raise ValueError(f"{where}: expected ndim={self.ndim}, found ndim={len(shape)}. "
                             f"Full shape received: {shape}")
        if self.min_ndim is not None and len(shape) < self.min_ndim:
            raise ValueError(f"{where}: expected min_ndim={self.min_ndim}, found "
                             f"ndim={len(shape)}. Full shape received: {shape}")
        if self.max_ndim is not None and len(shape) > self.max_ndim:
            raise ValueError(f"{where}: expected max_ndim={self.max_ndim}, found "
                             f"ndim={len(shape)}. Full shape received: {shape}")
        for axis, value in self.axes.items():
            if value is None or -len(shape) > axis or axis >= len(shape):
                continue
            if shape[axis] is not None and shape[axis] != value:
                raise ValueError(f"{where}: expected axis {axis} of input shape to have value "
                                 f"{value}, but received input with shape {shape}")
        if self.shape is not None:
            for i, (want, got) in enumerate(zip(self.shape, shape)):
                if want is not None and got is not None and want != got:
                    raise ValueError(f"{where}: expected shape={self.shape}, found "
                                     f"shape={shape}")


def flatten_structure(x) -> list:
    """A tensor, a list/tuple or a dict (by sorted key, as Keras flattens) as a flat list."""
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in flatten_structure(x[k])]
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in flatten_structure(item)]
    return [x]


def is_symbolic(x) -> bool:
    return any(isinstance(t, KerasTensor) for t in flatten_structure(x))


_SIGNATURES: Dict[Any, Tuple[bool, bool]] = {}


def call_accepts(fn) -> Tuple[bool, bool]:
    """Whether ``fn`` takes ``training`` and ``mask`` (or ``**kwargs``): Keras passes them only
    then."""
    key = getattr(fn, "__func__", fn)
    found = _SIGNATURES.get(key)
    if found is None:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        found = ("training" in params or var_kw, "mask" in params or var_kw)
        _SIGNATURES[key] = found
    return found


def _shape_list(value) -> bool:
    """Whether ``value`` is a list of shapes rather than one shape."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, (list, tuple)) or v is None for v in value) and not all(v is None for v in value)


def _dummy(shape, dtype, fill: int) -> np.ndarray:
    return np.zeros(tuple(fill if d is None else d for d in shape), dtype=dtype)


class Layer:
    """Base class of every layer, Keras-shaped.

    Subclass it with ``build(input_shape)`` (create weights with ``add_weight``), ``call(inputs)``
    (NumPy math) and ``get_config()``.

    Example:
        >>> import numpy as np
        >>> class Scale(Layer):
        ...     def build(self, input_shape):
        ...         self.w = self.add_weight("w", shape=(input_shape[-1],), initializer="ones")
        ...     def call(self, inputs, training=None):
        ...         return inputs * self.w.value
        >>> Scale()(np.ones((2, 3), np.float32)).shape
        (2, 3)
    """

    # Multi-input layers (Concatenate, Add, ...) take a list: see the module docs of the seams.
    _multi_input = False
    # A layer that accepts a mask sets this (and takes mask=None in call and forward_train).
    supports_masking = False
    input_spec: Optional[InputSpec] = None
    #: A regularizer whose penalty on the layer's output (divided by the batch size) fit adds
    #: to the loss, as in Keras; settable on any layer.
    activity_regularizer = None

    def __init__(self, trainable: bool = True, name: Optional[str] = None, dtype=None,
                 input_shape=None, batch_input_shape=None, batch_size=None, input_dim=None,
                 **kwargs):
        if kwargs.pop("activity_regularizer", None) is not None:
            raise NotImplementedError(f"{type(self).__name__}: activity_regularizer is not "
                                      f"supported yet")
        unknown = set(kwargs) - {"autocast", "dynamic"}
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(unknown)}")
        if name is None:
            name = backend.unique_name(backend.to_snake_case(type(self).__name__))
        else:
            if not isinstance(name, str) or not name:
                raise TypeError(f"Expected a non-empty string layer name, got {name!r}")
            backend.reserve_name(name)
        self.name = name
        self.trainable = bool(trainable)
        self.dtype = np.dtype(dtype or backend.floatx()).name
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_input_shape is not None:
            self._batch_input_shape = _as_shape(batch_input_shape)
        elif input_shape is not None:
            self._batch_input_shape = (batch_size,) + _as_shape(input_shape)
        else:
            self._batch_input_shape = None
        self.built = False
        self._weights: List[Variable] = []
        self._workspace: Dict[str, np.ndarray] = {}
        self._grads: List[np.ndarray] = []
        self._inbound_nodes: List[Node] = []

    # --- Keras API --------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        self.built = True

    def call(self, inputs, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _single_node(self, what: str) -> "Node":
        nodes = self.__dict__.get("_inbound_nodes") or []
        if not nodes:
            raise AttributeError(f"Layer {self.name!r} has never been called and thus has no "
                                 f"defined {what}.")
        if len(nodes) > 1:
            raise AttributeError(f"Layer {self.name!r} has multiple inbound nodes, hence the "
                                 f"notion of 'layer {what}' is ill-defined.")
        return nodes[0]

    @property
    def output(self):
        """The symbolic output of a layer called once (``keras.Model(m.input, layer.output)``)."""
        outs = self._single_node("output").outputs
        return outs[0] if len(outs) == 1 else list(outs)

    @property
    def input(self):
        """The symbolic input of a layer called once."""
        node = self._single_node("input")
        return node.outputs[0] if node.is_input else node.inputs

    def compute_mask(self, inputs, mask=None):
        """The mask of this layer's output: the input mask for a layer that supports masking,
        else None (Keras' default)."""
        return mask if self.supports_masking else None

    def __call__(self, inputs, *args, **kwargs):
        if is_symbolic(inputs):
            if args:
                raise TypeError(f"Layer {self.name!r}: positional arguments after the inputs are "
                                f"not supported on symbolic tensors; pass them by keyword")
            return self._symbolic_call(inputs, **kwargs)
        training = kwargs.pop("training", None)
        mask = kwargs.pop("mask", None)
        if self._multi_input and isinstance(inputs, (list, tuple)):
            x = [np.asarray(t) for t in inputs]
            self._maybe_build([(None,) + tuple(t.shape[1:]) for t in x])
        else:
            x = np.asarray(inputs)
            self._maybe_build((None,) + tuple(x.shape[1:]))
        return self._call_with(self.call, x, training, mask, *args, **kwargs)

    def _call_with(self, fn, x, training, mask, *args, **kwargs):
        """``fn(x, ...)`` with ``training``/``mask`` passed only when ``fn`` takes them."""
        takes_training, takes_mask = call_accepts(fn)
        if takes_training:
            kwargs["training"] = training
        if takes_mask and mask is not None:
            kwargs["mask"] = mask
        return fn(x, *args, **kwargs)

    # --- the symbolic path: layer(keras_tensor) ---------------------------------------------------
    def _symbolic_inputs(self, inputs):
        """Checked structure of symbolic inputs and their shapes (one shape or a list)."""
        flat = flatten_structure(inputs)
        bad = [t for t in flat if not isinstance(t, KerasTensor)]
        if bad:
            raise TypeError(f"Layer {self.name!r}: cannot mix symbolic tensors (keras.Input) and "
                            f"concrete values in one call, got {type(bad[0]).__name__}")
        if self._multi_input:
            if not isinstance(inputs, (list, tuple)) or isinstance(inputs, dict):
                raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) expects a list of "
                                 f"inputs, got {inputs!r}")
            return list(inputs), [t.shape for t in inputs]
        if isinstance(inputs, (list, tuple, dict)):
            if len(flat) != 1:
                raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) expects 1 input, "
                                 f"but it received {len(flat)} input tensors: "
                                 f"{[t.shape for t in flat]}")
            inputs = flat[0]
        return inputs, inputs.shape

    def _check_symbolic_shapes(self, shapes) -> None:
        spec = self.input_spec
        if spec is None:
            return
        specs = spec if isinstance(spec, (list, tuple)) else [spec]
        all_shapes = shapes if self._multi_input else [shapes]
        for i, (sp, shape) in enumerate(zip(specs, all_shapes)):
            if sp is not None:
                sp.check(self.name, i, shape)

    def _symbolic_call(self, inputs, **kwargs):
        training = kwargs.pop("training", None)
        mask = kwargs.pop("mask", None)
        inputs, shapes = self._symbolic_inputs(inputs)
        if self.built:
            self._check_symbolic_shapes(shapes)
        try:
            self._maybe_build(shapes)
        except ValueError as e:
            if self.name in str(e):
                raise
            raise ValueError(f"Exception encountered when calling layer {self.name!r} "
                             f"({type(self).__name__}) on input shape {shapes}: {e}") from None
        self._check_symbolic_shapes(shapes)
        out_shape = self._symbolic_output_shape(inputs, shapes, kwargs)
        multi = _shape_list(out_shape)
        out_shapes = [tuple(s) for s in out_shape] if multi else [tuple(out_shape)]
        index = len(self._inbound_nodes)
        outputs = [KerasTensor(shape, self.dtype if self.dtype else "float32",
                               name=self.name if (index == 0 and len(out_shapes) == 1)
                               else f"{self.name}_{index}_{i}")
                   for i, shape in enumerate(out_shapes)]
        node_kwargs = dict(kwargs)
        if training is not None:
            node_kwargs["training"] = training
        Node(self, inputs, outputs, node_kwargs)
        in_masks = mask if mask is not None else (
            [t._keras_mask for t in inputs] if self._multi_input else inputs._keras_mask)
        self._symbolic_mask(inputs, in_masks, outputs)
        return outputs if multi else outputs[0]

    def _infer_output_shape(self, input_shape):
        """``compute_output_shape``, or for a custom layer without one, the shape its ``call``
        gives on small dummy batches."""
        cls = type(self)
        if cls.compute_output_shape is not Layer.compute_output_shape or cls.call is Layer.call:
            return self.compute_output_shape(input_shape)
        if self._multi_input and _shape_list(input_shape):
            inputs = [KerasTensor(s) for s in input_shape]
        else:
            inputs = KerasTensor(input_shape)
        return self._symbolic_output_shape(inputs, input_shape, {})

    def _symbolic_output_shape(self, inputs, shapes, kwargs):
        cls = type(self)
        if cls.compute_output_shape is not Layer.compute_output_shape or cls.call is Layer.call:
            return self.compute_output_shape(shapes)
        # A custom layer without compute_output_shape: run call() on two small dummy batches
        # (unknown dimensions as 1, then 2) and read the shape off, as Keras traces call().
        try:
            outs = []
            for fill in (1, 2):
                if self._multi_input:
                    x = [_dummy(t.shape, t.dtype, fill) for t in inputs]
                else:
                    x = _dummy(inputs.shape, inputs.dtype, fill)
                outs.append(self._call_with(self.call, x, False, None, **kwargs))
        except Exception as e:
            raise ValueError(f"Layer {self.name!r} ({cls.__name__}): could not infer its output "
                             f"shape for input shape {shapes} by calling it ({type(e).__name__}: "
                             f"{e}). Define compute_output_shape(input_shape).") from None

        def shape_of(a, b):
            a, b = np.shape(a), np.shape(b)
            return (None,) + tuple(None if da != db else da for da, db in zip(a[1:], b[1:]))

        if isinstance(outs[0], (list, tuple)):
            return [shape_of(a, b) for a, b in zip(*outs)]
        return shape_of(*outs)

    def _symbolic_mask(self, inputs, in_masks, outputs) -> None:
        """Set ``_keras_mask`` on the outputs where this layer produces a mask."""
        has_in = any(m is not None for m in flatten_structure(in_masks)) \
            if in_masks is not None else False
        if type(self).compute_mask is Layer.compute_mask:
            if self.supports_masking and has_in and len(outputs) == 1:
                first = next(m for m in flatten_structure(in_masks) if m is not None)
                outputs[0]._keras_mask = first
            return
        try:
            if self._multi_input:
                x = [_dummy(t.shape, t.dtype, 1) for t in inputs]
                m = [None if mk is None else _dummy(mk.shape, bool, 1)
                     for mk in (in_masks or [None] * len(inputs))]
            else:
                x = _dummy(inputs.shape, inputs.dtype, 1)
                m = None if in_masks is None else _dummy(in_masks.shape, bool, 1)
            result = self.compute_mask(x, m)
        except Exception:  # the runtime computes real masks anyway; this is metadata
            return
        results = result if isinstance(result, (list, tuple)) else [result]
        for out, r in zip(outputs, results):
            if r is not None:
                ndim = np.ndim(r)
                out._keras_mask = KerasTensor(out.shape[:ndim], "bool", name=f"{out.name}_mask")

    def _maybe_build(self, input_shape) -> None:
        if not self.built:
            if _shape_list(input_shape) and self._multi_input:
                self.build([tuple(s) for s in input_shape])
            else:
                self.build(tuple(input_shape))
            self.built = True

    def add_weight(self, name: str = None, shape=(), dtype=None, initializer=None,
                   regularizer=None, trainable: bool = True, constraint=None,
                   **kwargs) -> Variable:
        if name is None:
            name = f"variable_{len(self._weights)}"
        shape = _as_shape(shape) or ()
        if any(d is None or d < 0 for d in shape):
            raise ValueError(f"Layer {self.name!r}: weight {name!r} needs a fully known, "
                             f"non-negative shape, got {shape}")
        dtype = np.dtype(dtype or self.dtype)
        if initializer is None:
            initializer = "glorot_uniform" if dtype.kind == "f" else "zeros"
        value = initializers.get(initializer)(shape, dtype)
        var = Variable(value, name=f"{self.name}/{name}", trainable=trainable, dtype=dtype)
        var.regularizer, var.constraint = regularizers.get(regularizer), constraints.get(constraint)
        self._weights.append(var)
        return var

    @property
    def weights(self) -> List[Variable]:
        return list(self._weights)

    @property
    def trainable_weights(self) -> List[Variable]:
        return [w for w in self._weights if w.trainable] if self.trainable else []

    @property
    def non_trainable_weights(self) -> List[Variable]:
        if not self.trainable:
            return list(self._weights)
        return [w for w in self._weights if not w.trainable]

    # Keras 3 spelling
    variables = weights
    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights

    def get_weights(self) -> List[np.ndarray]:
        return [w.numpy() for w in self._weights]

    def set_weights(self, weights: Sequence) -> None:
        weights = list(weights)
        if len(weights) != len(self._weights):
            raise ValueError(f"Layer {self.name!r} expects {len(self._weights)} weights, "
                             f"got {len(weights)}")
        for var, value in zip(self._weights, weights):
            value = np.asarray(value)
            if value.shape != var.shape:
                raise ValueError(f"Layer {self.name!r} weight {var.name}: expected shape "
                                 f"{var.shape}, got {value.shape}")
        for var, value in zip(self._weights, weights):
            var.assign(value)

    def count_params(self) -> int:
        return int(sum(int(np.prod(w.shape)) for w in self._weights))

    def get_config(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._batch_input_shape is not None:
            config["batch_input_shape"] = list(self._batch_input_shape)
        return config

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Layer":
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"

    # --- checkpointing: edges from this layer to its weights (kernel, bias, ...) ---------------
    def _trackable_children(self, for_restore: bool = False):
        return [(w.path.rsplit("/", 1)[-1], w) for w in self._weights]

    # --- training protocol (used by Model.fit) --------------------------------------------
    def _ws(self, key: str, shape, dtype=np.float32) -> np.ndarray:
        """A reusable, aligned scratch buffer: no allocation per step once shapes settle."""
        # Keyed by shape too: a short last batch gets its own buffers instead of evicting the
        # full-batch ones (which would reallocate twice per epoch).
        full_key = (key, tuple(shape), np.dtype(dtype).str)
        buf = self._workspace.get(full_key)
        if buf is None:
            buf = aligned_empty(shape, dtype)
            self._workspace[full_key] = buf
        return buf

    def _grad_buffers(self) -> List[np.ndarray]:
        tw = self.trainable_weights
        if len(self._grads) != len(tw) or any(g.shape != w.shape for g, w in zip(self._grads, tw)):
            self._grads = [aligned_empty(w.shape, w.dtype) for w in tw]
        return self._grads

    def _place_grad_buffers(self, buffers: Sequence[np.ndarray]) -> None:
        """Use ``buffers`` (for instance views of one gradient arena) as this layer's weight
        gradients from now on: one writeable C-contiguous array per trainable weight, of its
        shape and dtype. ``_grad_buffers()`` keeps them while the weights keep their shapes."""
        tw = self.trainable_weights
        if len(buffers) != len(tw):
            raise ValueError(f"Layer {self.name!r}: {len(buffers)} gradient buffers for "
                             f"{len(tw)} trainable weights")
        for b, w in zip(buffers, tw):
            if (not isinstance(b, np.ndarray) or b.shape != tuple(w.shape) or b.dtype != w.dtype
                    or not b.flags.c_contiguous or not b.flags.writeable):
                raise ValueError(f"Layer {self.name!r}: the gradient buffer of {w.name!r} must be "
                                 f"a writeable C-contiguous {w.dtype} array of shape "
                                 f"{tuple(w.shape)}, got {getattr(b, 'dtype', type(b).__name__)} "
                                 f"{getattr(b, 'shape', '')}")
        self._grads = list(buffers)

    def forward_train(self, x: np.ndarray, training: bool, mask=None) -> np.ndarray:
        """Forward pass that keeps what ``backward`` needs. Python layers: ``call`` on NumPy
        (``training`` and ``mask`` passed only if ``call`` takes them)."""
        self._last_input = x
        out = self._call_with(self.call, x, training, mask)
        out = np.ascontiguousarray(out, dtype=np.float32)
        self._last_output = out
        return out

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        """Gradient of the loss w.r.t. this layer's input; fills the weight gradients.

        A Python layer overrides ``grad(inputs, outputs, grad_outputs)`` returning
        ``(grad_inputs, [grad per trainable weight])``.
        """
        grad_fn = getattr(self, "grad", None)
        if grad_fn is None:
            if not self.trainable_weights and type(self).call is Layer.call:
                return grad_output
            raise NotImplementedError(
                f"Layer {self.name!r} ({type(self).__name__}) cannot be trained inside fit: it "
                f"defines call() but no grad(inputs, outputs, grad_outputs) -> (grad_inputs, "
                f"[weight grads]). Define grad(), or freeze the layer and give it no weights.")
        dx, dws = grad_fn(self._last_input, self._last_output, grad_output)
        bufs = self._grad_buffers()
        if len(dws) != len(bufs):
            raise ValueError(f"Layer {self.name!r}: grad() returned {len(dws)} weight gradients, "
                             f"expected {len(bufs)}")
        for buf, g in zip(bufs, dws):
            buf[...] = g
        if not need_input_grad:
            return None
        if isinstance(dx, (list, tuple)):
            return [None if d is None else np.ascontiguousarray(d, np.float32) for d in dx]
        return np.ascontiguousarray(dx, np.float32)
