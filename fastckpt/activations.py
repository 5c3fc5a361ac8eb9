"""Activation functions, by name and as functions (``keras.activations``).

Every named activation runs in the native kernels (``ops.ACTIVATIONS``), also fused into ``Dense``
forward and backward. Definitions follow tf.keras 2.x: ``'gelu'`` is the exact (erf) form,
``'leaky_relu'`` has slope 0.2, ``hard_sigmoid`` is ``clip(0.2 x + 0.5, 0, 1)`` (Keras 3 changed it
to ``relu6(x + 3) / 6``). Keras 3's ``hard_silu``/``hard_swish`` and ``log_sigmoid`` are here too.

Example:
    >>> import numpy as np
    >>> relu(np.array([-1.0, 2.0], np.float32)).tolist()
    [0.0, 2.0]
    >>> serialize(get("gelu"))
    'gelu'
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from fastckpt import ops

__all__ = ["get", "serialize", "deserialize", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu",
           "silu", "swish", "sigmoid", "hard_sigmoid", "tanh", "softplus", "softsign", "softmax",
           "log_softmax", "exponential", "linear", "mish", "hard_silu", "hard_swish", "log_sigmoid"]


def _f32(x) -> np.ndarray:
    return np.array(x, dtype=np.float32, order="C", copy=True)


def _apply(name: str, x) -> np.ndarray:
    out = _f32(x)
    if out.size == 0:
        return out
    if out.ndim == 0:
        return ops.activation_forward(name, out.reshape(1, 1)).reshape(())
    return ops.activation_forward(name, out)


def relu(x, alpha: float = 0.0, max_value: Optional[float] = None, threshold: float = 0.0,
         negative_slope: Optional[float] = None):
    """``max(x, 0)``; with ``alpha`` (Keras 3: ``negative_slope``) a leak below ``threshold``,
    ``max_value`` a ceiling, ``threshold`` the point below which values are zeroed."""
    if negative_slope is not None:
        alpha = negative_slope
    if alpha == 0.0 and max_value is None and threshold == 0.0:
        return _apply("relu", x)
    xs = _f32(x)
    return ops.relu_forward(xs, np.empty_like(xs), float(alpha), max_value, float(threshold))


def relu6(x):
    """``min(max(x, 0), 6)``."""
    return _apply("relu6", x)


def leaky_relu(x, alpha: float = 0.2, negative_slope: Optional[float] = None):
    """``x`` for ``x > 0``, else ``alpha * x`` (``tf.nn.leaky_relu``; Keras 3: ``negative_slope``)."""
    if negative_slope is not None:
        alpha = negative_slope
    if np.float32(alpha) == np.float32(0.2):
        return _apply("leaky_relu", x)
    xs = _f32(x)
    return ops.relu_forward(xs, np.empty_like(xs), float(alpha))


def elu(x, alpha: float = 1.0):
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    if alpha == 1.0:
        return _apply("elu", x)
    xs = _f32(x)
    return ops.elu_forward(xs, np.empty_like(xs), float(alpha))


def selu(x):
    """Scaled ELU with the self-normalizing constants (scale 1.0507..., alpha 1.6732...)."""
    return _apply("selu", x)


def gelu(x, approximate: bool = False):
    """``x * Phi(x)`` (exact, through erf) or, with ``approximate=True``, its tanh form."""
    return _apply("gelu_approximate" if approximate else "gelu", x)


def silu(x):
    """``x * sigmoid(x)``."""
    return _apply("silu", x)


def swish(x):
    """``x * sigmoid(x)`` (the same function as ``silu``)."""
    return _apply("swish", x)


def sigmoid(x):
    return _apply("sigmoid", x)


def hard_sigmoid(x):
    """``clip(0.2 * x + 0.5, 0, 1)`` (the tf.keras 2.x definition)."""
    return _apply("hard_sigmoid", x)


def tanh(x):
    return _apply("tanh", x)


def softplus(x):
    """``log(exp(x) + 1)``."""
    return _apply("softplus", x)


def softsign(x):
    """``x / (|x| + 1)``."""
    return _apply("softsign", x)


def _along_axis(name: str, x, axis: int) -> np.ndarray:
    xs = _f32(x)
    if xs.ndim == 0:
        raise ValueError(f"{name}: expected an input of rank >= 1, got a scalar")
    axis = int(axis)
    if not -xs.ndim <= axis < xs.ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for an input of rank {xs.ndim}")
    if axis % xs.ndim == xs.ndim - 1:
        return ops.activation_forward(name, xs)
    if name == "softmax":
        return ops.softmax_axis_forward(xs, np.empty_like(xs), axis)
    moved = np.ascontiguousarray(np.moveaxis(xs, axis, -1))
    return np.ascontiguousarray(np.moveaxis(ops.activation_forward(name, moved), -1, axis))


def softmax(x, axis: int = -1):
    """``exp(x) / sum(exp(x))`` along ``axis``."""
    return _along_axis("softmax", x, axis)


def log_softmax(x, axis: int = -1):
    """``x - log(sum(exp(x)))`` along ``axis``."""
    return _along_axis("log_softmax", x, axis)


def exponential(x):
    return _apply("exponential", x)


def linear(x):
    return np.asarray(x, np.float32)


def mish(x):
    """``x * tanh(softplus(x))``."""
    return _apply("mish", x)


def hard_silu(x):
    """``x * relu6(x + 3) / 6`` (Keras 3; also named ``hard_swish``)."""
    return _apply("hard_silu", x)


def hard_swish(x):
    """``x * relu6(x + 3) / 6`` (the same function as ``hard_silu``)."""
    return _apply("hard_swish", x)


def log_sigmoid(x):
    """``log(sigmoid(x)) = -softplus(-x)`` (Keras 3)."""
    return _apply("log_sigmoid", x)


_FUNCS: Dict[str, Callable] = {
    "relu": relu, "relu6": relu6, "leaky_relu": leaky_relu, "elu": elu, "selu": selu,
    "gelu": gelu, "silu": silu, "swish": swish, "sigmoid": sigmoid, "hard_sigmoid": hard_sigmoid,
    "tanh": tanh, "softplus": softplus, "softsign": softsign, "softmax": softmax,
    "log_softmax": log_softmax, "exponential": exponential, "linear": linear, "mish": mish,
    "hard_silu": hard_silu, "hard_swish": hard_swish, "log_sigmoid": log_sigmoid,
}
_NAMES = {id(fn): name for name, fn in _FUNCS.items()}


def _valid_names():
    return sorted(set(_FUNCS) | set(ops.ACTIVATIONS))


def _unknown(identifier) -> ValueError:
    return ValueError(f"Unknown activation function {identifier!r}; expected one of "
                      f"{_valid_names()}")


def _name_from_dict(identifier: dict) -> str:
    # Keras 3: {"class_name": "function", "config": "relu", ...}; legacy: {"class_name": "relu"}.
    inner = identifier.get("config")
    if isinstance(inner, str):
        return inner
    name = identifier.get("class_name")
    if isinstance(name, str) and name != "function":
        return name
    raise _unknown(identifier)


def name_of(identifier) -> str:
    """The kernel name of an activation given as a name, one of these functions, a serialized
    dict or ``None`` (``'linear'``): what ``Dense`` stores and fuses."""
    if identifier is None:
        return "linear"
    if isinstance(identifier, dict):
        identifier = _name_from_dict(identifier)
    if isinstance(identifier, str):
        if identifier not in ops.ACTIVATIONS:
            raise _unknown(identifier)
        return identifier
    name = _NAMES.get(id(identifier))
    if name is not None:
        return name
    raise TypeError(f"Could not interpret activation function identifier {identifier!r}: expected "
                    f"a name in {_valid_names()} or a fastckpt.activations function")


def get(identifier) -> Callable:
    """The activation function for a name, a function, a serialized dict or ``None`` (linear).
    Any other callable is returned as it is, as in Keras."""
    if identifier is None:
        return linear
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise TypeError(f"Could not interpret activation function identifier: {identifier!r}")


def serialize(activation) -> str:
    """The name of an activation function (or of a name, checked)."""
    if isinstance(activation, str):
        if activation not in ops.ACTIVATIONS and activation not in _FUNCS:
            raise ValueError(f"Unknown activation function {activation!r} cannot be serialized; "
                             f"expected one of {_valid_names()}")
        return activation
    name = _NAMES.get(id(activation))
    if name is None:
        raise ValueError(f"Unknown activation function {activation!r} cannot be serialized; "
                         f"expected one of {_valid_names()}")
    return name


def deserialize(name, custom_objects: Optional[dict] = None) -> Callable:
    """The function for a name (or a serialized dict); ``custom_objects`` may map more names."""
    if isinstance(name, dict):
        name = _name_from_dict(name)
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if not isinstance(name, str):
        raise TypeError(f"Expected an activation name, got {name!r}")
    fn = _FUNCS.get(name)
    if fn is None:
        if name == "gelu_approximate":
            return _gelu_approximate
        raise _unknown(name)
    return fn


def _gelu_approximate(x):
    return _apply("gelu_approximate", x)


_NAMES[id(_gelu_approximate)] = "gelu_approximate"
