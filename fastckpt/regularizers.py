"""Weight and activity penalties, named as in Keras (``l1``, ``l2``, ``l1_l2``, ...).

A regularizer is called on an array and returns its penalty as a float; ``add_gradient(x, grad)``
adds the penalty's gradient into ``grad`` in place. L1/L2 penalties of float32 weights run in one
native pass each (``fastckpt.ops.l1l2_penalty`` / ``l1l2_add_gradient``), with no allocation. The training loop adds both to the loss of
every step, so the reported ``loss`` includes them as in Keras.

Example:
    >>> import numpy as np
    >>> reg = L2(0.5)
    >>> reg(np.ones((2, 2), np.float32))
    2.0
    >>> g = np.zeros((2, 2), np.float32)
    >>> reg.add_gradient(np.ones((2, 2), np.float32), g)
    >>> g[0, 0]
    1.0
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from fastckpt import ops
from fastckpt.checks import is_real
from fastckpt.errors import UnknownObjectError

__all__ = ["Regularizer", "L1", "L2", "L1L2", "OrthogonalRegularizer", "l1", "l2", "l1_l2",
           "orthogonal_regularizer", "get", "serialize", "deserialize"]


def _penalty_number(name: str, value) -> float:
    """tf.keras' rule: an int or a float, finite. Stored as float32, as Keras does."""
    if not is_real(value):
        raise ValueError(f"Value {value!r} is not a valid regularization penalty number for "
                         f"{name}, expected an int or float value.")
    if math.isinf(value) or math.isnan(value):
        raise ValueError(f"Value {value} is not a valid regularization penalty number for {name}, "
                         f"an infinite number or NaN are not valid values.")
    return float(np.float32(value))


def _native(a: np.ndarray) -> bool:
    """Whether the native kernels take ``a`` as it is (float32, C-contiguous)."""
    return a.dtype == np.float32 and a.flags.c_contiguous


def _as_array(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return x


class Regularizer:
    """Base class: no penalty. Subclasses implement ``__call__``, ``add_gradient`` and
    ``get_config``; ``from_config`` passes the config back to the constructor."""

    def __call__(self, x) -> float:
        return 0.0

    def add_gradient(self, x: np.ndarray, grad: np.ndarray) -> None:
        """``grad += d penalty / d x``, in place."""

    def get_config(self) -> Dict[str, Any]:
        raise NotImplementedError(f"{self} does not implement get_config()")

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Regularizer":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x**2)``. The string ``'l1_l2'`` means ``L1L2(0.01, 0.01)``;
    the class defaults are 0."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = _penalty_number("l1", 0.0 if l1 is None else l1)
        self.l2 = _penalty_number("l2", 0.0 if l2 is None else l2)

    def __call__(self, x) -> float:
        x = _as_array(x)
        if _native(x):
            return ops.l1l2_penalty(x, self.l1, self.l2)
        total = 0.0
        if self.l1:
            total += self.l1 * float(np.abs(x).sum(dtype=np.float64))
        if self.l2:
            flat = x.reshape(-1).astype(np.float64)
            total += self.l2 * float(np.dot(flat, flat))
        return total

    def add_gradient(self, x: np.ndarray, grad: np.ndarray) -> None:
        x = np.asarray(x)
        if grad.shape != x.shape:
            raise ValueError(f"{type(self).__name__}.add_gradient: grad has shape {grad.shape}, "
                             f"expected the shape of the value, {x.shape}")
        if not (self.l1 or self.l2):
            return
        if _native(x) and _native(grad) and not np.may_share_memory(x, grad):
            ops.l1l2_add_gradient(x, grad, self.l1, self.l2)
            return
        # Other dtypes or layouts: the same formula in NumPy (d|x|/dx = sign(x), 0 at 0).
        grad += (self.l1 * np.sign(x) + (2.0 * self.l2) * x).astype(grad.dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """``l1 * sum(|x|)``; default ``l1=0.01`` (the string ``'l1'``)."""

    def __init__(self, l1: float = 0.01, **kwargs):
        l1 = kwargs.pop("l", l1)  # the old Keras spelling
        if kwargs:
            raise TypeError(f"L1: argument(s) not recognized: {sorted(kwargs)}")
        super().__init__(l1=0.01 if l1 is None else l1, l2=0.0)

    def get_config(self) -> Dict[str, Any]:
        return {"l1": self.l1}


class L2(L1L2):
    """``l2 * sum(x**2)``; default ``l2=0.01`` (the string ``'l2'``)."""

    def __init__(self, l2: float = 0.01, **kwargs):
        l2 = kwargs.pop("l", l2)
        if kwargs:
            raise TypeError(f"L2: argument(s) not recognized: {sorted(kwargs)}")
        super().__init__(l1=0.0, l2=0.01 if l2 is None else l2)

    def get_config(self) -> Dict[str, Any]:
        return {"l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Pushes the rows (``mode='rows'``) or columns (``'columns'``) of a 2-D weight towards
    orthogonality: ``factor * 0.5 * sum(|offdiag(N N^T)|) / num_pairs`` with ``N`` the
    L2-normalised rows (columns), as tf.keras computes it."""

    def __init__(self, factor: float = 0.01, mode: str = "rows"):
        self.factor = _penalty_number("factor", factor)
        if mode not in ("rows", "columns"):
            raise ValueError(f"Invalid value for argument `mode`. Expected one of "
                             f"{{'rows', 'columns'}}. Received: mode={mode!r}")
        self.mode = mode

    def _parts(self, x: np.ndarray):
        if x.ndim != 2:
            raise ValueError(f"Inputs to OrthogonalRegularizer must have rank 2. Received: "
                             f"inputs.shape == {x.shape}")
        a = np.asarray(x, np.float64)
        if self.mode == "columns":
            a = a.T
        sq = np.sum(a * a, axis=1, keepdims=True)
        inv = 1.0 / np.sqrt(np.maximum(sq, 1e-12))  # tf.math.l2_normalize's epsilon
        n = a * inv
        prod = n @ n.T
        np.fill_diagonal(prod, 0.0)
        size = a.shape[0]
        pairs = size * (size - 1.0) / 2.0
        return a, sq, inv, n, prod, pairs

    def __call__(self, x) -> float:
        _, _, _, _, prod, pairs = self._parts(_as_array(x))
        if pairs == 0:
            return 0.0  # one row: nothing to be orthogonal to (tf.keras divides 0 by 0 here)
        return float(self.factor * 0.5 * np.abs(prod).sum() / pairs)

    def add_gradient(self, x: np.ndarray, grad: np.ndarray) -> None:
        x = np.asarray(x)
        if grad.shape != x.shape:
            raise ValueError(f"OrthogonalRegularizer.add_gradient: grad has shape {grad.shape}, "
                             f"expected {x.shape}")
        a, sq, inv, n, prod, pairs = self._parts(x)
        if pairs == 0:
            return
        g = np.sign(prod) * (self.factor * 0.5 / pairs)  # d penalty / d (N N^T), diagonal 0
        dn = (g + g.T) @ n
        # Through the normalisation: rows whose squared norm is under the epsilon are scaled
        # by a constant, the others lose the radial component.
        radial = np.where(sq > 1e-12, np.sum(dn * n, axis=1, keepdims=True), 0.0)
        da = (dn - n * radial) * inv
        if self.mode == "columns":
            da = da.T
        grad += da.astype(grad.dtype, copy=False)

    def get_config(self) -> Dict[str, Any]:
        return {"factor": self.factor, "mode": self.mode}


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """``L1L2`` with Keras' function defaults (0.01 each)."""
    return L1L2(l1=l1, l2=l2)


# Keras' lowercase aliases.
l1 = L1
l2 = L2
orthogonal_regularizer = OrthogonalRegularizer

_CLASSES = {c.__name__: c for c in (L1, L2, L1L2, OrthogonalRegularizer)}
_BY_NAME = dict(_CLASSES, l1=L1, l2=L2, l1_l2=l1_l2, l1l2=L1L2,
                orthogonal_regularizer=OrthogonalRegularizer)


def _lookup(name: str, custom_objects: Optional[Dict[str, Any]]):
    for n in (name, name.split(">")[-1]):
        if custom_objects and n in custom_objects:
            return custom_objects[n]
    return _BY_NAME.get(name) or _BY_NAME.get(name.split(">")[-1])


def deserialize(config, custom_objects: Optional[Dict[str, Any]] = None) -> Regularizer:
    """A regularizer from a name or a config dict, in the tf.keras (``{'class_name', 'config'}``)
    or Keras 3 (plus ``module``/``registered_name``) spelling. Nothing is imported."""
    if isinstance(config, str):
        cls = _lookup(config, custom_objects)
        if cls is None:
            raise UnknownObjectError(f"Unknown regularizer {config!r}; expected one of "
                                     f"{sorted(_BY_NAME)}")
        return cls()
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"Could not interpret regularizer identifier: {config!r:.200}")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise ValueError(f"Regularizer config must be a dict, got {inner!r:.120}")
    name = config["class_name"]
    registered = config.get("registered_name")
    cls = _lookup(registered, custom_objects) if isinstance(registered, str) else None
    cls = cls or _lookup(name, custom_objects)
    if cls is None:
        raise UnknownObjectError(f"Unknown regularizer {name!r}; expected one of "
                                 f"{sorted(_BY_NAME)} or a class passed in custom_objects")
    if cls is l1_l2:
        return l1_l2(**inner)
    return cls.from_config(dict(inner))


def get(identifier) -> Optional[Regularizer]:
    """``None``, a name (``'l2'``), a config dict or a regularizer -> a regularizer (or None).

    fastckpt differentiates penalties itself, so a plain function is refused: subclass
    ``Regularizer`` and implement ``__call__`` and ``add_gradient``.
    """
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()
    if callable(identifier) and callable(getattr(identifier, "add_gradient", None)):
        return identifier
    if callable(identifier):
        raise TypeError(f"Regularizer {identifier!r:.100} has no add_gradient(x, grad): fastckpt "
                        f"trains without autodiff, so a regularizer must also give its gradient. "
                        f"Subclass keras.regularizers.Regularizer and implement __call__ and "
                        f"add_gradient.")
    raise ValueError(f"Could not interpret regularizer identifier: {identifier!r:.100}")


def serialize(regularizer) -> Optional[Dict[str, Any]]:
    """``{'class_name': ..., 'config': ...}`` (tf.keras' spelling), or None."""
    if regularizer is None:
        return None
    name = getattr(type(regularizer), "_registered_name", type(regularizer).__name__)
    return {"class_name": name, "config": regularizer.get_config()}
