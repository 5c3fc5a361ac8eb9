"""``Lion`` (evolved sign momentum), Keras' update rule."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["Lion"]

_f32 = np.float32


class Lion(Optimizer):
    """``var -= lr sign(b1 m + (1 - b1) g)``; ``m = b2 m + (1 - b2) g``.

    Example:
        >>> Lion().get_config()["beta_2"]
        0.99
    """

    def __init__(self, learning_rate=0.0001, beta_1: float = 0.9, beta_2: float = 0.99,
                 name: str = "Lion", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._check_positive("beta_1", beta_1)
        self._check_positive("beta_2", beta_2)
        if beta_1 <= 0 or beta_1 > 1:
            raise ValueError(f"`beta_1`={beta_1} must be between ]0, 1]. Otherwise, the optimizer "
                             f"degenerates to SignSGD.")
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self._init_slots(("m",))

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr) -> None:
        b1, b2 = _f32(self.beta_1), _f32(self.beta_2)
        ops.lion_update(var, grad, slots[0], lr, b1, _f32(1.0) - b1, b2, _f32(1.0) - b2)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2})
        return config
