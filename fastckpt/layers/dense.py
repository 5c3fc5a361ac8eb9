"""``Dense``: ``activation(inputs . kernel + bias)`` with a fused native kernel."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from fastckpt import activations, constraints, initializers, ops, regularizers
from fastckpt.checks import is_int
from fastckpt.layers.base import InputSpec, Layer

__all__ = ["Dense"]


class Dense(Layer):
    """Densely connected layer, kernel of shape ``(input_dim, units)`` as in Keras.

    Example:
        >>> import numpy as np
        >>> layer = Dense(4, activation="relu")
        >>> layer(np.ones((2, 3), np.float32)).shape
        (2, 4)
    """

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        if not is_int(units):
            raise TypeError(f"Dense: expected a positive integer for units, got {units!r}")
        if units <= 0:
            raise ValueError(f"Dense: expected a positive integer for units, got {units}")
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = activations.name_of(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        # The training loop adds its penalty on this layer's output (divided by the batch size,
        # as tf.keras does) to the loss.
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.kernel = None
        self.bias = None

    def build(self, input_shape) -> None:
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"Dense {self.name!r}: the last dimension of the input must be "
                             f"known, got input shape {tuple(input_shape)}")
        self.input_spec = InputSpec(min_ndim=2, axes={-1: in_dim})
        self.kernel = self.add_weight("kernel", (in_dim, self.units), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer,
                                        constraint=self.bias_constraint)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def _check_input(self, x: np.ndarray) -> None:
        if x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: "
                             f"expected axis -1 of input shape to have value "
                             f"{self.kernel.shape[0]}, but received input with shape {x.shape}")

    def call(self, inputs, training=None):
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        self._check_input(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        out = np.empty((x2.shape[0], self.units), np.float32)
        ops.dense_forward(x2, self.kernel.value, self.bias.value if self.use_bias else None, out,
                          self.activation)
        return out.reshape(lead + (self.units,))

    # --- training protocol ----------------------------------------------------------------
    def forward_train(self, x: np.ndarray, training: bool, logits: bool = False) -> np.ndarray:
        """``logits=True``: leave out the activation (the training loop passes it for the last
        layer when the loss takes the softmax over, as tf.keras does). Activations whose
        derivative needs the pre-activation (gelu, silu, ...) keep it beside the output."""
        act = "linear" if logits else self.activation
        self._lead = x.shape[:-1]  # (batch, steps...): the kernels see (rows, features)
        x = x.reshape(-1, x.shape[-1])
        y = self._ws("y", (x.shape[0], self.units))
        z = self._ws("z", y.shape) if act in ops.ACTIVATIONS_NEEDING_Z else None
        ops.dense_forward_z(x, self.kernel.value, self.bias.value if self.use_bias else None, z, y,
                            act)
        self._last_input = x
        self._last_pre = z
        self._last_output = y
        reg = self.activity_regularizer
        if reg is not None:  # the loop adds it to the loss: penalty of the output / batch rows
            self._activity_penalty = float(reg(y)) / y.shape[0] if y.shape[0] else 0.0
        return y if len(self._lead) == 1 else y.reshape(self._lead + (self.units,))

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True, logits: bool = False):
        """``logits`` as in the ``forward_train`` call this step made."""
        x, y, z = self._last_input, self._last_output, self._last_pre
        grad_output = grad_output.reshape(y.shape)
        reg = self.activity_regularizer
        if reg is not None and y.shape[0]:  # d(penalty / rows)/dy joins the incoming gradient
            extra = self._ws("activity_grad", y.shape)
            extra.fill(0.0)
            reg.add_gradient(y, extra)
            extra *= np.float32(1.0 / y.shape[0])
            extra += grad_output
            grad_output = extra
        act = "linear" if logits else self.activation
        dz = self._ws("dz", y.shape)
        dx = self._ws("dx", x.shape) if need_input_grad else None
        grads = self._grad_buffers()
        if not self.trainable:
            dW = self._ws("dW_frozen", self.kernel.shape)
            db = self._ws("db_frozen", (self.units,)) if self.use_bias else None
        else:
            dW = grads[0]
            db = grads[1] if self.use_bias else None
        ops.dense_backward_z(x, self.kernel.value, z, y, grad_output, dz, dW, db, dx, act)
        return dx if dx is None or len(self._lead) == 1 else dx.reshape(self._lead + (x.shape[-1],))

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
        })
        return config
