"""Shape layers: ``Flatten`` and ``Reshape`` (no arithmetic: views of the input's memory)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from fastckpt.checks import is_int
from fastckpt.layers.base import Layer

__all__ = ["Flatten", "Reshape"]


def _prod(dims) -> Optional[int]:
    out = 1
    for d in dims:
        if d is None:
            return None
        out *= int(d)
    return out


class Flatten(Layer):
    """Flattens each sample to one axis: ``(batch, d1, d2, ...) -> (batch, d1 * d2 * ...)``.

    ``data_format='channels_first'`` moves axis 1 last first, as Keras does, so the element order
    matches a channels-last model.

    Example:
        >>> import numpy as np
        >>> Flatten()(np.zeros((2, 3, 4), np.float32)).shape
        (2, 12)
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format is None:
            data_format = "channels_last"
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"Flatten: data_format must be 'channels_last' or 'channels_first', "
                             f"got {data_format!r}")
        self.data_format = data_format

    def _permuted(self, ndim: int) -> bool:
        return self.data_format == "channels_first" and ndim > 2

    def call(self, inputs, training=None):
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim == 1:
            return np.ascontiguousarray(x.reshape(-1, 1))
        if self._permuted(x.ndim):
            x = np.moveaxis(x, 1, -1)
        return np.ascontiguousarray(x).reshape(x.shape[0], -1)

    def forward_train(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._in_shape = x.shape
        return self.call(x)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        shape = self._in_shape
        g = np.asarray(grad_output, np.float32)
        if self._permuted(len(shape)):
            moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
            dx = self._ws("dx", shape)
            dx[...] = np.moveaxis(g.reshape(moved), -1, 1)
            return dx
        return np.ascontiguousarray(g).reshape(shape)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) == 1:
            return input_shape + (1,)
        return (input_shape[0], _prod(input_shape[1:]))

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (one entry may be -1: inferred).

    Example:
        >>> import numpy as np
        >>> Reshape((3, -1))(np.zeros((2, 12), np.float32)).shape
        (2, 3, 4)
    """

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        if is_int(target_shape):
            target_shape = (target_shape,)
        if not isinstance(target_shape, (list, tuple)) or not all(is_int(d) for d in target_shape):
            raise TypeError(f"Reshape: target_shape must be a tuple of integers, got "
                            f"{target_shape!r}")
        target_shape = tuple(int(d) for d in target_shape)
        if sum(1 for d in target_shape if d == -1) > 1:
            raise ValueError(f"Reshape: there must be at most one unknown dimension (-1) in "
                             f"target_shape, got {target_shape}")
        if any(d < -1 or d == 0 for d in target_shape):
            raise ValueError(f"Reshape: target_shape entries must be positive or -1, got "
                             f"{target_shape}")
        self.target_shape = target_shape

    def _resolve(self, per_sample) -> tuple:
        """``target_shape`` with -1 filled in for a per-sample input shape (None if unknown)."""
        size = _prod(per_sample)
        known = _prod(d for d in self.target_shape if d != -1)
        if size is None:
            return tuple(None if d == -1 else d for d in self.target_shape)
        if -1 in self.target_shape:
            if known == 0 or size % known:
                raise ValueError(self._mismatch(per_sample))
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if known != size:
            raise ValueError(self._mismatch(per_sample))
        return self.target_shape

    def _mismatch(self, per_sample) -> str:
        return (f"Reshape {self.name!r}: total size of the new array must be unchanged, "
                f"input_shape = {list(per_sample)}, output_shape = {list(self.target_shape)}")

    def call(self, inputs, training=None):
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        return x.reshape((x.shape[0],) + self._resolve(x.shape[1:]))

    def forward_train(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._in_shape = x.shape
        return self.call(x)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        return np.ascontiguousarray(grad_output, dtype=np.float32).reshape(self._in_shape)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        return (input_shape[0],) + self._resolve(input_shape[1:])

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["target_shape"] = self.target_shape
        return config
