"""``Adamax``, Keras' update rule."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.adam import _check_beta
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["Adamax"]


class Adamax(Optimizer):
    """``m += (g - m)(1 - b1)``; ``u = max(b2 u, |g|)``;
    ``var -= lr m / ((1 - b1^t)(u + epsilon))``.

    Example:
        >>> Adamax().get_config()["beta_2"]
        0.999
    """

    _legacy_slots = {"v": "u"}

    def __init__(self, learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, name: str = "Adamax", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = _check_beta("Adamax", "beta_1", beta_1)
        self.beta_2 = _check_beta("Adamax", "beta_2", beta_2)
        self._check_positive("epsilon", epsilon)
        self.epsilon = float(epsilon)
        self._init_slots(("m", "u"))

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr) -> None:
        b1p = np.power(np.float32(self.beta_1), np.float32(step))
        ops.adamax_update(var, grad, slots[0], slots[1], lr, 1 - self.beta_1, self.beta_2,
                          np.float32(1) - b1p, self.epsilon)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config
