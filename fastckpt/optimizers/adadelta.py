"""``Adadelta``, Keras' update rule."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    """``ag = rho ag + (1 - rho) g^2``; ``d = -sqrt(adv + eps) g / sqrt(ag + eps)``;
    ``adv = rho adv + (1 - rho) d^2``; ``var += lr d``.

    Example:
        >>> Adadelta().get_config()["rho"]
        0.95
    """

    _legacy_slots = {"accum_grad": "accumulated_grad", "accum_var": "accumulated_delta_var"}

    def __init__(self, learning_rate=0.001, rho: float = 0.95, epsilon: float = 1e-7,
                 name: str = "Adadelta", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._check_positive("rho", rho)
        self._check_positive("epsilon", epsilon)
        self.rho = float(rho)
        self.epsilon = float(epsilon)
        self._init_slots(("accumulated_grad", "accumulated_delta_var"))

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr) -> None:
        ops.adadelta_update(var, grad, slots[0], slots[1], lr, self.rho, 1 - self.rho, self.epsilon)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"rho": self.rho, "epsilon": self.epsilon})
        return config
