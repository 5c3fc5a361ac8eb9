"""``GlobalAveragePooling1D`` / ``GlobalMaxPooling1D``: reduce the steps axis of
``(batch, steps, features)`` with native kernels (masked steps left out of the average)."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from fastckpt import ops
from fastckpt.layers.base import Layer

__all__ = ["GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalAvgPool1D", "GlobalMaxPool1D"]


class _GlobalPooling1D(Layer):
    def __init__(self, data_format: str = "channels_last", keepdims: bool = False, **kwargs):
        super().__init__(**kwargs)
        fmt = str(data_format).lower() if data_format is not None else "channels_last"
        if fmt not in ("channels_last", "channels_first"):
            raise ValueError(f"The `data_format` argument must be one of \"channels_first\", "
                             f"\"channels_last\". Received: {data_format!r}")
        self.data_format = fmt
        self.keepdims = bool(keepdims)

    def build(self, input_shape) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: "
                             f"expected ndim=3, found ndim={len(input_shape)}. Full shape "
                             f"received: {tuple(input_shape)}")
        steps = input_shape[1 if self.data_format == "channels_last" else 2]
        if steps == 0:
            raise ValueError(f"Incorrect input shape {list(input_shape)} with dimension 0 at "
                             f"reduction axis {1 if self.data_format == 'channels_last' else 2}.")
        self.built = True

    def compute_output_shape(self, input_shape):
        b, d1, d2 = tuple(input_shape)
        if self.data_format == "channels_first":
            return (b, d1, 1) if self.keepdims else (b, d1)
        return (b, 1, d2) if self.keepdims else (b, d2)

    def compute_mask(self, inputs, mask=None):
        return None

    def _btc(self, inputs) -> np.ndarray:
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim != 3:
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: "
                             f"expected ndim=3, found ndim={x.ndim}. Full shape received: {x.shape}")
        if self.data_format == "channels_first":
            x = x.transpose(0, 2, 1)
        return np.ascontiguousarray(x)

    def _mask(self, mask, x: np.ndarray):
        if mask is None:
            return None
        m = np.asarray(mask)
        if m.shape != x.shape[:2]:
            raise ValueError(f"Layer {self.name!r}: expected a mask of shape (batch, steps) = "
                             f"{x.shape[:2]}, got {m.shape}")
        return np.ascontiguousarray(m != 0, dtype=np.uint8)

    def _shape_out(self, y: np.ndarray) -> np.ndarray:
        if not self.keepdims:
            return y
        b, c = y.shape
        return y.reshape((b, c, 1) if self.data_format == "channels_first" else (b, 1, c))

    def _grad_in(self, dx: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(dx.transpose(0, 2, 1)) if self.data_format == "channels_first" \
            else dx

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"data_format": self.data_format, "keepdims": self.keepdims})
        return config


class GlobalAveragePooling1D(_GlobalPooling1D):
    """Mean over the steps axis, as ``tf.keras.layers.GlobalAveragePooling1D``. With a mask
    (from ``Embedding(mask_zero=True)``) the mean is over the unmasked steps only (a sample with
    every step masked gives NaN, as in Keras).

    Example:
        >>> import numpy as np
        >>> GlobalAveragePooling1D()(np.ones((2, 5, 3), np.float32)).shape
        (2, 3)
    """

    def __init__(self, data_format: str = "channels_last", **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        x = self._btc(inputs)
        y = np.empty((x.shape[0], x.shape[2]), np.float32)
        ops.gap1d_forward(x, y, self._mask(mask, x))
        return self._shape_out(y)

    def forward_train(self, x, training: bool, mask=None) -> np.ndarray:
        x = self._btc(x)
        self._in_shape = x.shape
        self._last_mask = self._mask(mask, x)
        y = self._ws("y", (x.shape[0], x.shape[2]))
        ops.gap1d_forward(x, y, self._last_mask)
        return self._shape_out(y)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        b, t, c = self._in_shape
        g = np.ascontiguousarray(grad_output, dtype=np.float32).reshape(b, c)
        dx = self._ws("dx", self._in_shape)
        ops.gap1d_backward(g, dx, self._last_mask)
        return self._grad_in(dx)


class GlobalMaxPooling1D(_GlobalPooling1D):
    """Maximum over the steps axis, as ``tf.keras.layers.GlobalMaxPooling1D`` (which, like
    Keras, does not consume masks). The gradient goes to the maximal steps, split between ties
    as TensorFlow splits it.

    Example:
        >>> import numpy as np
        >>> GlobalMaxPooling1D()(np.arange(6, dtype=np.float32).reshape(1, 3, 2)).tolist()
        [[4.0, 5.0]]
    """

    def call(self, inputs, training=None):
        x = self._btc(inputs)
        y = np.empty((x.shape[0], x.shape[2]), np.float32)
        ops.gmp1d_forward(x, y)
        return self._shape_out(y)

    def forward_train(self, x, training: bool, mask=None) -> np.ndarray:
        x = self._btc(x)
        self._last_input = x
        y = self._ws("y", (x.shape[0], x.shape[2]))
        ops.gmp1d_forward(x, y)
        self._last_output = y
        return self._shape_out(y)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        x, y = self._last_input, self._last_output
        g = np.ascontiguousarray(grad_output, dtype=np.float32).reshape(y.shape)
        dx = self._ws("dx", x.shape)
        ops.gmp1d_backward(x, y, g, dx)
        return self._grad_in(dx)


GlobalAvgPool1D = GlobalAveragePooling1D
GlobalMaxPool1D = GlobalMaxPooling1D
