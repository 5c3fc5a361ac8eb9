"""Activation layers with parameters: ``ReLU``, ``LeakyReLU``, ``PReLU``, ``ELU``, ``Softmax``."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from fastckpt import initializers, ops
from fastckpt.checks import is_int, is_real
from fastckpt.layers.base import Layer

__all__ = ["ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"]


def _f32c(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _number(layer: str, name: str, value, allow_none: bool = False, minimum=None) -> Optional[float]:
    if value is None and allow_none:
        return None
    if not is_real(value) and not (isinstance(value, np.ndarray) and value.ndim == 0):
        raise ValueError(f"{layer}: {name} must be a number, received: {name}={value!r}")
    value = float(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{layer}: {name} of a {layer} layer cannot be a negative value. "
                         f"Received: {name}={value}")
    return value


class _Elementwise(Layer):
    """An elementwise layer without weights: ``_fwd(x, y)`` and ``_bwd(x, dy, dx)`` kernels."""

    supports_masking = True

    def _fwd(self, x: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _bwd(self, x: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
        raise NotImplementedError

    def call(self, inputs, training=None, mask=None):
        x = _f32c(inputs)
        y = np.empty_like(x)
        self._fwd(x, y)
        return y

    def forward_train(self, x: np.ndarray, training: bool, mask=None) -> np.ndarray:
        x = _f32c(x)
        y = self._ws("y", x.shape)
        self._fwd(x, y)
        self._last_input = x
        return y

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        x = self._last_input
        dx = self._ws("dx", x.shape)
        self._bwd(x, _f32c(grad_output), dx)
        return dx


class ReLU(_Elementwise):
    """``max(x, 0)`` with an optional ceiling ``max_value``, a leak ``negative_slope`` below
    ``threshold``, and ``threshold`` (values at or below it become zero), as ``keras.layers.ReLU``.

    Example:
        >>> import numpy as np
        >>> ReLU(max_value=1.0)(np.array([[-1.0, 0.5, 3.0]], np.float32)).tolist()
        [[0.0, 0.5, 1.0]]
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        if max_value is not None:
            max_value = _number("ReLU", "max_value", max_value, minimum=0.0)
        if negative_slope is None:
            raise ValueError("ReLU: negative_slope of a ReLU layer cannot be None. Expected a "
                             "float. Received: negative_slope=None")
        if threshold is None:
            raise ValueError("ReLU: threshold of a ReLU layer cannot be None. Expected a float. "
                             "Received: threshold=None")
        self.max_value = max_value
        self.negative_slope = _number("ReLU", "negative_slope", negative_slope, minimum=0.0)
        self.threshold = _number("ReLU", "threshold", threshold, minimum=0.0)

    def _fwd(self, x, y):
        ops.relu_forward(x, y, self.negative_slope, self.max_value, self.threshold)

    def _bwd(self, x, dy, dx):
        ops.relu_backward(x, dy, dx, self.negative_slope, self.max_value, self.threshold)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"max_value": self.max_value, "negative_slope": self.negative_slope,
                       "threshold": self.threshold})
        return config


class LeakyReLU(_Elementwise):
    """``x`` for ``x > 0``, else ``alpha * x`` (Keras 3 calls ``alpha`` ``negative_slope``).

    Example:
        >>> import numpy as np
        >>> LeakyReLU(alpha=0.5)(np.array([[-2.0, 2.0]], np.float32)).tolist()
        [[-1.0, 2.0]]
    """

    def __init__(self, alpha=0.3, negative_slope=None, **kwargs):
        super().__init__(**kwargs)
        if negative_slope is not None:
            alpha = negative_slope
        if alpha is None:
            raise ValueError("LeakyReLU: the alpha value of a LeakyReLU layer cannot be None. "
                             "Expected a float. Received: alpha=None")
        self.alpha = _number("LeakyReLU", "alpha", alpha)

    @property
    def negative_slope(self) -> float:
        return self.alpha

    def _fwd(self, x, y):
        ops.relu_forward(x, y, self.alpha)

    def _bwd(self, x, dy, dx):
        ops.relu_backward(x, dy, dx, self.alpha)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["alpha"] = self.alpha
        return config


class ELU(_Elementwise):
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``.

    Example:
        >>> import numpy as np
        >>> ELU()(np.array([[0.0, 1.0]], np.float32)).tolist()
        [[0.0, 1.0]]
    """

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        if alpha is None:
            raise ValueError("ELU: alpha of an ELU layer cannot be None. Expected a float. "
                             "Received: alpha=None")
        self.alpha = _number("ELU", "alpha", alpha)

    def _fwd(self, x, y):
        ops.elu_forward(x, y, self.alpha)

    def _bwd(self, x, dy, dx):
        ops.elu_backward(x, dy, dx, self.alpha)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["alpha"] = self.alpha
        return config


def _serialize_optional(obj):
    if obj is None:
        return None
    get_config = getattr(obj, "get_config", None)
    return {"class_name": type(obj).__name__, "config": get_config() if get_config else {}}


class PReLU(Layer):
    """Leaky ReLU whose slopes ``alpha`` are learned: ``x`` for ``x > 0``, else ``alpha * x``.

    ``alpha`` has the input's per-sample shape, with size 1 along ``shared_axes`` (axes counted
    with the batch axis as 0, as in Keras).

    Example:
        >>> import numpy as np
        >>> layer = PReLU(alpha_initializer="ones")
        >>> layer(np.array([[-2.0, 3.0]], np.float32)).tolist()
        [[-2.0, 3.0]]
        >>> [w.name for w in layer.weights]
        ['p_re_lu/alpha:0']
    """

    supports_masking = True

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None,
                 shared_axes=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("alpha_regularizer", alpha_regularizer),
                            ("alpha_constraint", alpha_constraint)):
            if isinstance(value, (str, dict)):
                raise NotImplementedError(f"PReLU: {name} given by name is not supported yet; "
                                          f"pass the object")
        self.alpha_initializer = initializers.get(alpha_initializer)
        self.alpha_regularizer = alpha_regularizer
        self.alpha_constraint = alpha_constraint
        if shared_axes is None:
            self.shared_axes = None
        elif isinstance(shared_axes, (list, tuple)):
            self.shared_axes = [int(a) for a in shared_axes]
        elif is_int(shared_axes):
            self.shared_axes = [int(shared_axes)]
        else:
            raise TypeError(f"PReLU: shared_axes must be None, an int or a list of ints, got "
                            f"{shared_axes!r}")
        self.alpha = None
        self._idx_cache: Dict[tuple, np.ndarray] = {}

    def build(self, input_shape) -> None:
        input_shape = tuple(input_shape)
        param_shape = list(input_shape[1:])
        for axis in self.shared_axes or ():
            if not 1 <= axis < len(input_shape):
                raise ValueError(f"PReLU {self.name!r}: shared axis {axis} is out of range for "
                                 f"input shape {input_shape}")
            param_shape[axis - 1] = 1
        if any(d is None for d in param_shape):
            raise ValueError(f"PReLU {self.name!r}: every non-shared axis of the input must be "
                             f"known, got input shape {input_shape}")
        self.alpha = self.add_weight("alpha", tuple(param_shape), initializer=self.alpha_initializer,
                                     regularizer=self.alpha_regularizer,
                                     constraint=self.alpha_constraint)
        self.built = True

    def _index(self, x: np.ndarray) -> np.ndarray:
        per = tuple(x.shape[1:])
        idx = self._idx_cache.get(per)
        if idx is None:
            ashape = self.alpha.shape
            if len(per) != len(ashape) or any(a != 1 and a != p for a, p in zip(ashape, per)):
                raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: "
                                 f"expected per-sample shape {tuple(ashape)} (1 on shared axes), "
                                 f"got input shape {x.shape}")
            ids = np.arange(int(np.prod(ashape, dtype=np.int64)), dtype=np.int64).reshape(ashape)
            idx = np.array(np.broadcast_to(ids, per), dtype=np.int64, order="C").ravel()
            self._idx_cache[per] = idx
        return idx

    def call(self, inputs, training=None, mask=None):
        x = _f32c(inputs)
        y = np.empty_like(x)
        return ops.prelu_forward(x, self.alpha.value, self._index(x), y)

    def forward_train(self, x: np.ndarray, training: bool, mask=None) -> np.ndarray:
        x = _f32c(x)
        y = self._ws("y", x.shape)
        ops.prelu_forward(x, self.alpha.value, self._index(x), y)
        self._last_input = x
        return y

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        x = self._last_input
        dx = self._ws("dx", x.shape) if need_input_grad else None
        grads = self._grad_buffers()
        d_alpha = grads[0] if grads else None
        ops.prelu_backward(x, self.alpha.value, self._index(x), _f32c(grad_output), dx, d_alpha)
        return dx

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({
            "alpha_initializer": initializers.serialize(self.alpha_initializer),
            "alpha_regularizer": _serialize_optional(self.alpha_regularizer),
            "alpha_constraint": _serialize_optional(self.alpha_constraint),
            "shared_axes": self.shared_axes,
        })
        return config


class Softmax(Layer):
    """Softmax along ``axis``; with a ``mask``, masked-out positions get (nearly) zero weight.

    Example:
        >>> import numpy as np
        >>> Softmax()(np.zeros((1, 4), np.float32)).tolist()
        [[0.25, 0.25, 0.25, 0.25]]
    """

    supports_masking = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise NotImplementedError("Softmax: a softmax over several axes is not supported yet")
            axis = axis[0]
        if not is_int(axis):
            raise TypeError(f"Softmax: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def _prepare(self, inputs, mask) -> np.ndarray:
        x = _f32c(inputs)
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"Softmax {self.name!r}: axis {self.axis} is out of range for input "
                             f"shape {x.shape}")
        if mask is not None:
            # As tf.keras: a large negative number added where the mask is 0.
            x = _f32c(x + (1.0 - np.asarray(mask, np.float32)) * np.float32(-1e9))
        return x

    def call(self, inputs, training=None, mask=None):
        x = self._prepare(inputs, mask)
        return ops.softmax_axis_forward(x, np.empty_like(x), self.axis)

    def forward_train(self, x: np.ndarray, training: bool, mask=None) -> np.ndarray:
        x = self._prepare(x, mask)
        y = self._ws("y", x.shape)
        ops.softmax_axis_forward(x, y, self.axis)
        self._last_output = y
        return y

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        y = self._last_output
        dx = self._ws("dx", y.shape)
        ops.softmax_axis_backward(y, _f32c(grad_output), dx, self.axis)
        return dx

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["axis"] = self.axis
        return config
