"""Weight constraints, named as in Keras (``max_norm``, ``non_neg``, ``unit_norm``, ...).

A constraint maps a weight array to its projected value; the training loop applies it after every
update. The formulas (and their ``1e-7`` epsilon) are tf.keras'.

Example:
    >>> import numpy as np
    >>> w = np.array([[3.0], [4.0]], np.float32)  # one column of norm 5
    >>> np.round(MaxNorm(1.0)(w), 4).ravel().tolist()
    [0.6, 0.8]
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from fastckpt.checks import is_int, is_real
from fastckpt.errors import UnknownObjectError

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "max_norm",
           "min_max_norm", "non_neg", "unit_norm", "get", "serialize", "deserialize"]

EPSILON = 1e-7  # keras.backend.epsilon()


def _axis(axis, where: str):
    if is_int(axis):
        return int(axis)
    if isinstance(axis, (list, tuple)) and axis and all(is_int(a) for a in axis):
        return [int(a) for a in axis]
    raise TypeError(f"{where}: expected axis to be an integer or a list of integers, got {axis!r}")


def _number(value, name: str, where: str) -> float:
    if not is_real(value) or value != value:
        raise TypeError(f"{where}: expected {name} to be a number, got {value!r}")
    return value


def _array(w) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype.kind != "f":
        w = w.astype(np.float32)
    return w


def _norms(w: np.ndarray, axis) -> np.ndarray:
    axes = axis if isinstance(axis, list) else [axis]
    if any(not -w.ndim <= a < w.ndim for a in axes):
        raise ValueError(f"axis {axis} is out of range for a weight of shape {w.shape}")
    return np.sqrt(np.sum(np.square(w), axis=tuple(axes), keepdims=True))


class Constraint:
    """Base class: the identity. Subclasses implement ``__call__(w) -> array`` and
    ``get_config``."""

    def __call__(self, w) -> np.ndarray:
        return w

    def get_config(self) -> Dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Constraint":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MaxNorm(Constraint):
    """Rescales each slice along ``axis`` (each unit's incoming weights for a ``Dense`` kernel
    with ``axis=0``) whose L2 norm exceeds ``max_value``."""

    def __init__(self, max_value: float = 2, axis=0):
        self.max_value = _number(max_value, "max_value", "MaxNorm")
        self.axis = _axis(axis, "MaxNorm")

    def __call__(self, w) -> np.ndarray:
        w = _array(w)
        norms = _norms(w, self.axis)
        desired = np.clip(norms, 0, self.max_value)
        return (w * (desired / (EPSILON + norms))).astype(w.dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"max_value": self.max_value, "axis": self.axis}


class MinMaxNorm(Constraint):
    """Moves each slice's norm into ``[min_value, max_value]``:
    ``rate * clip(norm) + (1 - rate) * norm``."""

    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0, axis=0):
        self.min_value = _number(min_value, "min_value", "MinMaxNorm")
        self.max_value = _number(max_value, "max_value", "MinMaxNorm")
        self.rate = _number(rate, "rate", "MinMaxNorm")
        self.axis = _axis(axis, "MinMaxNorm")

    def __call__(self, w) -> np.ndarray:
        w = _array(w)
        norms = _norms(w, self.axis)
        desired = self.rate * np.clip(norms, self.min_value, self.max_value) + (1 - self.rate) * norms
        return (w * (desired / (EPSILON + norms))).astype(w.dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


class NonNeg(Constraint):
    """Zeroes the negative weights."""

    def __call__(self, w) -> np.ndarray:
        w = _array(w)
        return w * (w >= 0).astype(w.dtype)


class UnitNorm(Constraint):
    """Scales each slice along ``axis`` to unit L2 norm (``w / (eps + norm)``)."""

    def __init__(self, axis=0):
        self.axis = _axis(axis, "UnitNorm")

    def __call__(self, w) -> np.ndarray:
        w = _array(w)
        return (w / (EPSILON + _norms(w, self.axis))).astype(w.dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"axis": self.axis}


# Keras' lowercase aliases.
max_norm = MaxNorm
min_max_norm = MinMaxNorm
non_neg = NonNeg
unit_norm = UnitNorm

_CLASSES = {c.__name__: c for c in (MaxNorm, MinMaxNorm, NonNeg, UnitNorm)}
_BY_NAME = dict(_CLASSES, max_norm=MaxNorm, min_max_norm=MinMaxNorm, non_neg=NonNeg,
                unit_norm=UnitNorm, maxnorm=MaxNorm, nonneg=NonNeg, unitnorm=UnitNorm)


def _lookup(name: str, custom_objects: Optional[Dict[str, Any]]):
    for n in (name, name.split(">")[-1]):
        if custom_objects and n in custom_objects:
            return custom_objects[n]
    return _BY_NAME.get(name) or _BY_NAME.get(name.split(">")[-1])


def deserialize(config, custom_objects: Optional[Dict[str, Any]] = None) -> Constraint:
    """A constraint from a name or a tf.keras / Keras 3 config dict. Nothing is imported."""
    if isinstance(config, str):
        config = {"class_name": config, "config": {}}
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"Could not interpret constraint identifier: {config!r:.200}")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise ValueError(f"Constraint config must be a dict, got {inner!r:.120}")
    registered = config.get("registered_name")
    cls = _lookup(registered, custom_objects) if isinstance(registered, str) else None
    cls = cls or _lookup(config["class_name"], custom_objects)
    if cls is None:
        raise UnknownObjectError(f"Unknown constraint {config['class_name']!r}; expected one of "
                                 f"{sorted(_BY_NAME)} or a class passed in custom_objects")
    return cls.from_config(dict(inner))


def get(identifier) -> Optional[Constraint]:
    """``None``, a name (``'max_norm'``), a config dict, a constraint or any callable mapping an
    array to an array -> a constraint (or None)."""
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Constraint):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret constraint function identifier: {identifier!r:.100}")


def serialize(constraint) -> Optional[Dict[str, Any]]:
    """``{'class_name': ..., 'config': ...}`` (tf.keras' spelling), or None."""
    if constraint is None:
        return None
    name = getattr(type(constraint), "_registered_name", type(constraint).__name__)
    get_config = getattr(constraint, "get_config", None)
    return {"class_name": name, "config": get_config() if get_config else {}}
