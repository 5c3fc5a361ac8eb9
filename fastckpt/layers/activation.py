"""``Activation``: applies a named activation (native kernel forward and backward)."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from fastckpt import activations, ops
from fastckpt.layers.base import Layer

__all__ = ["Activation"]


class Activation(Layer):
    """Applies ``activation`` (a name or a ``keras.activations`` function) to its input.

    Softmax and log_softmax work along the last axis; every other activation is elementwise.

    Example:
        >>> import numpy as np
        >>> Activation("relu")(np.array([[-1.0, 2.0]], np.float32)).tolist()
        [[0.0, 2.0]]
    """

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.name_of(activation)

    def call(self, inputs, training=None, mask=None):
        x = np.array(inputs, dtype=np.float32, order="C", copy=True)
        if x.size == 0:
            return x
        if x.ndim == 0:
            return ops.activation_forward(self.activation, x.reshape(1, 1)).reshape(())
        return ops.activation_forward(self.activation, x)

    def forward_train(self, x: np.ndarray, training: bool, mask=None) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._last_input = x
        if self.activation == "linear":
            self._last_output = x
            return x
        y = self._ws("y", x.shape)
        ops.activation_forward_out(self.activation, x, y)
        self._last_output = y
        return y

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        if self.activation == "linear":
            return grad_output
        x, y = self._last_input, self._last_output
        dx = self._ws("dx", y.shape)
        z = x if self.activation in ops.ACTIVATIONS_NEEDING_Z else None
        ops.activation_backward_z(self.activation, z, y, np.ascontiguousarray(grad_output), dx)
        return dx

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["activation"] = activations.serialize(self.activation)
        return config
