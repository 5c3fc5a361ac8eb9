"""``Layer``: the unit of computation, its weights, its config, and its training protocol.

Built-in layers run their math in the native kernels. A layer written in Python implements
``call`` with NumPy (enough for inference) and, to be trained inside ``fit``, ``backward``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fastckpt import backend, constraints, initializers, regularizers
from fastckpt.variables import Variable, aligned_empty

__all__ = ["Layer"]


def _as_shape(shape) -> Tuple[Optional[int], ...]:
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(None if d is None else int(d) for d in shape)


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

    #: A regularizer whose penalty on the layer's output (divided by the batch size) fit adds
    #: to the loss, as in Keras; settable on any layer.
    activity_regularizer = None

    def __init__(self, trainable: bool = True, name: Optional[str] = None, dtype=None,
                 input_shape=None, batch_input_shape=None, batch_size=None, input_dim=None,
                 **kwargs):
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

    # --- Keras API --------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        self.built = True

    def call(self, inputs, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def __call__(self, inputs, training=None, **kwargs):
        x = np.asarray(inputs)
        self._maybe_build((None,) + tuple(x.shape[1:]))
        return self.call(x, training=training, **kwargs) if kwargs else self.call(x, training=training)

    def _maybe_build(self, input_shape) -> None:
        if not self.built:
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

    def forward_train(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Forward pass that keeps what ``backward`` needs. Python layers: ``call`` on NumPy."""
        self._last_input = x
        out = self.call(x, training=training)
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
        return None if not need_input_grad else np.ascontiguousarray(dx, np.float32)
