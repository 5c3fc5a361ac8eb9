"""``Dropout``: inverted dropout whose mask comes from a counter-based RNG (reproducible)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from fastckpt import backend, ops
from fastckpt.checks import is_real
from fastckpt.layers.base import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of inputs during training and scales the rest by 1/(1-rate).

    The mask of every call is determined by ``(seed, offset)``; ``offset`` advances by the number
    of elements drawn, so saving those two integers is enough to resume bit-identically.

    Example:
        >>> import numpy as np
        >>> Dropout(0.5)(np.ones((2, 4), np.float32), training=False).tolist()
        [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """

    supports_masking = True  # the mask passes through, as in Keras

    def __init__(self, rate: float, noise_shape=None, seed: Optional[int] = None, **kwargs):
        if not is_real(rate):
            raise TypeError(f"Dropout: expected a float rate in [0, 1), got {rate!r}")
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout: expected rate in [0, 1), got {rate}")
        if noise_shape is not None:
            raise NotImplementedError("Dropout: noise_shape is not supported yet")
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.rng_seed = int(seed) if seed is not None else backend.next_seed()
        self.rng_offset = 0

    def call(self, inputs, training=None):
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        if not training or self.rate == 0.0:
            return x
        y = np.empty_like(x)
        mask = np.empty(x.shape, np.uint8)
        self._draw(x, y, mask)
        return y

    #: ``(first global row, rows in the global batch)`` while this process computes a share of a
    #: data-parallel batch (set by the training loop); None otherwise.
    _global_rows = None

    def _draw(self, x, y, mask) -> None:
        rows = self._global_rows
        if rows is None:
            ops.dropout_forward(x, y, mask, self.rate, self.rng_seed, self.rng_offset)
            self.rng_offset += x.size
            return
        # Element (global row i, j) draws counter offset + i * row_size + j, whoever computes it.
        row_size = x.size // x.shape[0] if x.shape[0] else 0
        ops.dropout_forward(x, y, mask, self.rate, self.rng_seed,
                            self.rng_offset + rows[0] * row_size)
        self.rng_offset += rows[1] * row_size

    def forward_train(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._active = bool(training) and self.rate > 0.0
        if not self._active:
            return x
        y = self._ws("y", x.shape)
        mask = self._ws("mask", x.shape, np.uint8)
        self._draw(x, y, mask)
        return y

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        if not self._active:
            return grad_output
        dx = self._ws("dx", grad_output.shape)
        ops.dropout_backward(grad_output, self._ws("mask", grad_output.shape, np.uint8), dx, self.rate)
        return dx

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"rate": self.rate, "noise_shape": None, "seed": self.seed})
        return config
