"""Noise layers, active only in training: ``GaussianNoise``, ``GaussianDropout``, ``AlphaDropout``.

Their random numbers come from the counter-based RNG that ``Dropout`` uses: ``(rng_seed,
rng_offset)`` determines every draw and ``rng_offset`` advances by the elements drawn, so a model
that saves the two integers resumes bit-identically.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from fastckpt import backend, ops
from fastckpt.checks import is_real
from fastckpt.layers.base import Layer

__all__ = ["GaussianNoise", "GaussianDropout", "AlphaDropout"]


def _rate(layer: str, rate, upper_inclusive: bool = False) -> float:
    if not is_real(rate):
        raise TypeError(f"{layer}: expected a float rate, got {rate!r}")
    rate = float(rate)
    ok = 0.0 <= rate <= 1.0 if upper_inclusive else 0.0 <= rate < 1.0
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{layer}: invalid value received for argument `rate`. Expected a float "
                         f"value in {bound}. Received: rate={rate}")
    return rate


class _Noise(Layer):
    supports_masking = True

    def __init__(self, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.rng_seed = int(seed) if seed is not None else backend.next_seed()
        self.rng_offset = 0

    def _active(self, training) -> bool:
        raise NotImplementedError

    def _draw(self, x: np.ndarray, y: np.ndarray, aux: Optional[np.ndarray]) -> None:
        raise NotImplementedError

    def _aux(self, shape, scratch: bool) -> Optional[np.ndarray]:
        return None

    def call(self, inputs, training=None, mask=None):
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        if not self._active(training):
            return x
        y = np.empty_like(x)
        self._draw(x, y, self._aux(x.shape, scratch=False))
        self.rng_offset += x.size
        return y

    def forward_train(self, x: np.ndarray, training: bool, mask=None) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._on = self._active(training)
        if not self._on:
            return x
        y = self._ws("y", x.shape)
        self._draw(x, y, self._aux(x.shape, scratch=True))
        self.rng_offset += x.size
        return y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class GaussianNoise(_Noise):
    """Adds zero-mean normal noise of standard deviation ``stddev`` in training.

    Example:
        >>> import numpy as np
        >>> GaussianNoise(0.1)(np.ones((1, 2), np.float32)).tolist()  # inference: unchanged
        [[1.0, 1.0]]
    """

    def __init__(self, stddev, seed: Optional[int] = None, **kwargs):
        if not is_real(stddev) or float(stddev) < 0:
            raise ValueError(f"GaussianNoise: stddev must be a non-negative float, got {stddev!r}")
        super().__init__(seed=seed, **kwargs)
        self.stddev = float(stddev)

    def _active(self, training) -> bool:
        return bool(training)

    def _draw(self, x, y, aux) -> None:
        ops.gaussian_noise_forward(x, y, self.stddev, self.rng_seed, self.rng_offset)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        return grad_output if need_input_grad else None

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"stddev": self.stddev, "seed": self.seed})
        return config


class GaussianDropout(_Noise):
    """Multiplies by normal noise of mean 1 and standard deviation ``sqrt(rate / (1 - rate))``
    in training (for ``0 < rate < 1``).

    Example:
        >>> import numpy as np
        >>> GaussianDropout(0.2)(np.ones((1, 2), np.float32)).tolist()
        [[1.0, 1.0]]
    """

    def __init__(self, rate, seed: Optional[int] = None, **kwargs):
        rate = _rate("GaussianDropout", rate, upper_inclusive=True)
        super().__init__(seed=seed, **kwargs)
        self.rate = rate

    def _active(self, training) -> bool:
        return bool(training) and 0.0 < self.rate < 1.0

    def _aux(self, shape, scratch: bool):
        return self._ws("noise", shape) if scratch else np.empty(shape, np.float32)

    def _draw(self, x, y, aux) -> None:
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        ops.gaussian_dropout_forward(x, y, aux, stddev, self.rng_seed, self.rng_offset)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        if not self._on:
            return grad_output
        g = np.ascontiguousarray(grad_output, dtype=np.float32)
        return ops.multiply(g, self._ws("noise", g.shape), self._ws("dx", g.shape))

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


class AlphaDropout(_Noise):
    """Dropout that keeps the mean and variance of SELU activations: dropped values are set to
    SELU's negative saturation value, then an affine map restores the statistics (as Keras).

    Example:
        >>> import numpy as np
        >>> AlphaDropout(0.2)(np.ones((1, 2), np.float32)).tolist()
        [[1.0, 1.0]]
    """

    def __init__(self, rate, noise_shape=None, seed: Optional[int] = None, **kwargs):
        rate = _rate("AlphaDropout", rate, upper_inclusive=True)
        if noise_shape is not None:
            raise NotImplementedError("AlphaDropout: noise_shape is not supported yet")
        super().__init__(seed=seed, **kwargs)
        self.rate = rate
        self.noise_shape = None

    def _active(self, training) -> bool:
        return bool(training) and 0.0 < self.rate < 1.0

    def _aux(self, shape, scratch: bool):
        return self._ws("mask", shape, np.uint8) if scratch else np.empty(shape, np.uint8)

    def _draw(self, x, y, aux) -> None:
        ops.alpha_dropout_forward(x, y, aux, self.rate, self.rng_seed, self.rng_offset)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        if not self._on:
            return grad_output
        g = np.ascontiguousarray(grad_output, dtype=np.float32)
        return ops.alpha_dropout_backward(g, self._ws("mask", g.shape, np.uint8),
                                          self._ws("dx", g.shape), self.rate)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
