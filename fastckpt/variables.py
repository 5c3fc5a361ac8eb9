"""``Variable``: a named, shaped, typed buffer that layers and optimizers own."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["Variable"]

_ALIGN = 64


def aligned_empty(shape: Sequence[int], dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on a 64-byte boundary (cache line,
    AVX-512 width): the kernels and the zero-copy checkpoint writer both like that."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    raw = np.empty(n * dtype.itemsize + _ALIGN, np.uint8)
    off = (-raw.ctypes.data) % _ALIGN
    return raw[off:off + n * dtype.itemsize].view(dtype).reshape(tuple(shape))


class Variable:
    """A mutable tensor with a Keras-style name (``dense/kernel:0``).

    Example:
        >>> v = Variable(np.zeros((2, 3), np.float32), name="dense/kernel")
        >>> v.assign(np.ones((2, 3)))
        >>> float(v.numpy().sum())
        6.0
    """

    def __init__(self, initial_value, name: str, trainable: bool = True, dtype=None):
        arr = np.asarray(initial_value, dtype=dtype)
        self._value = aligned_empty(arr.shape, arr.dtype)
        self._value[...] = arr
        self._path = name
        self.trainable = trainable
        #: Set by ``Layer.add_weight``: the penalty added to the loss (an object with
        #: ``__call__(value) -> float``), and the projection applied after each update
        #: (``__call__(value) -> array``). The Trainer applies both.
        self.regularizer = None
        self.constraint = None

    # --- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self._path}:0"

    @property
    def path(self) -> str:
        return self._path

    @property
    def shape(self) -> tuple:
        return self._value.shape

    @property
    def dtype(self) -> np.dtype:
        return self._value.dtype

    # --- value ----------------------------------------------------------------------------
    @property
    def value(self) -> np.ndarray:
        """The live buffer (no copy). Kernels update it in place."""
        return self._value

    def numpy(self) -> np.ndarray:
        return self._value.copy()

    def assign(self, value) -> "Variable":
        arr = np.asarray(value)
        if arr.shape != self._value.shape:
            raise ValueError(f"Cannot assign to variable {self.name}: expected shape "
                             f"{self._value.shape}, got {arr.shape}")
        self._value[...] = arr
        return self

    def _delta(self, delta, what: str) -> np.ndarray:
        # As tf.Variable: the update has the variable's shape exactly (no broadcasting, which
        # would silently add a row to every row) and is cast to the variable's dtype.
        arr = np.asarray(delta)
        if arr.shape != self._value.shape:
            raise ValueError(f"Cannot {what} variable {self.name}: expected a value of shape "
                             f"{self._value.shape}, got {arr.shape}")
        return arr.astype(self._value.dtype, copy=False)

    def assign_add(self, delta) -> "Variable":
        self._value += self._delta(delta, "assign_add to")
        return self

    def assign_sub(self, delta) -> "Variable":
        self._value -= self._delta(delta, "assign_sub from")
        return self

    def __array__(self, dtype=None, copy=None):
        return self._value.astype(dtype) if dtype is not None else self._value.copy()

    def __int__(self) -> int:
        return int(self._value)

    def __float__(self) -> float:
        return float(self._value)

    def __repr__(self) -> str:
        return (f"<fastckpt.Variable '{self.name}' shape={self.shape} dtype={self.dtype.name}, "
                f"numpy={np.array2string(self._value, threshold=6)}>")
