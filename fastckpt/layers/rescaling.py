"""``Rescaling``: ``inputs * scale + offset`` (native kernel for scalar scale and offset)."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from fastckpt import ops
from fastckpt.checks import is_real
from fastckpt.layers.base import Layer

__all__ = ["Rescaling"]


def _param(name: str, value):
    if is_real(value):
        return float(value)
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"Rescaling: {name} must be a number or an array of numbers, got "
                        f"{value!r}") from None
    return arr


class Rescaling(Layer):
    """Multiplies by ``scale`` and adds ``offset`` (scalars, or arrays that broadcast against
    each sample, e.g. one value per channel).

    Example:
        >>> import numpy as np
        >>> Rescaling(1 / 255.0)(np.array([[255.0, 0.0]], np.float32)).tolist()
        [[1.0, 0.0]]
    """

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale if not is_real(scale) else float(scale)
        self.offset = offset if not is_real(offset) else float(offset)
        self._scale = _param("scale", scale)
        self._offset = _param("offset", offset)
        self._scalar = isinstance(self._scale, float) and isinstance(self._offset, float)

    def call(self, inputs, training=None):
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        if self._scalar:
            return ops.scale_offset(x, np.empty_like(x), self._scale, self._offset)
        return np.ascontiguousarray(x * self._scale + self._offset, dtype=np.float32)

    def forward_train(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._in_shape = x.shape
        if self._scalar:
            return ops.scale_offset(x, self._ws("y", x.shape), self._scale, self._offset)
        return self.call(x)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        g = np.ascontiguousarray(grad_output, dtype=np.float32)
        if self._scalar:
            return ops.scale_offset(g, self._ws("dx", g.shape), self._scale, 0.0)
        dx = g * self._scale
        if dx.shape != self._in_shape:  # a scale that broadcast to more axes than the input
            dx = dx.reshape((-1,) + self._in_shape).sum(axis=0)
        return np.ascontiguousarray(dx, dtype=np.float32)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({k: v.tolist() if isinstance(v, np.ndarray) else v
                       for k, v in (("scale", self.scale), ("offset", self.offset))})
        return config
