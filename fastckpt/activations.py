"""Activation functions by name. The native kernels fuse the ones listed in ``ops.ACTIVATIONS``."""

from __future__ import annotations

import numpy as np

from fastckpt import ops

__all__ = ["get", "serialize", "relu", "sigmoid", "tanh", "softmax", "linear"]


def _apply(name: str, x) -> np.ndarray:
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    return ops.activation_forward(name, out)


def relu(x):
    return _apply("relu", x)


def sigmoid(x):
    return _apply("sigmoid", x)


def tanh(x):
    return _apply("tanh", x)


def softmax(x):
    return _apply("softmax", x)


def linear(x):
    return np.asarray(x, np.float32)


_FUNCS = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax, "linear": linear}


def get(identifier) -> str:
    """Normalize an activation to its name (``None`` -> ``'linear'``)."""
    if identifier is None:
        return "linear"
    if isinstance(identifier, str):
        if identifier not in ops.ACTIVATIONS:
            raise ValueError(f"Unknown activation {identifier!r}; expected one of "
                             f"{sorted(ops.ACTIVATIONS)}")
        return identifier
    for name, fn in _FUNCS.items():
        if identifier is fn:
            return name
    raise TypeError(f"Expected an activation name or a fastckpt.activations function, got "
                    f"{identifier!r}")


def serialize(name: str) -> str:
    return name
