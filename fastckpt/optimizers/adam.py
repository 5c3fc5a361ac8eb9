"""``Adam`` with Keras' update rule, one fused native pass per variable."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["Adam"]


class Adam(Optimizer):
    """Adam as in Keras: ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``,
    ``var -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + epsilon)``.

    Example:
        >>> opt = Adam(learning_rate=1e-3)
        >>> opt.get_config()["epsilon"]
        1e-07
    """

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, name: str = "Adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        for n, b in (("beta_1", beta_1), ("beta_2", beta_2)):
            self._check_positive(n, b)
            if not float(b) < 1.0:
                raise ValueError(f"Adam: expected {n} in [0, 1), got {b}")
        self._check_positive("epsilon", epsilon)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.amsgrad = bool(amsgrad)
        self.slot_names = ("m", "v", "vhat") if self.amsgrad else ("m", "v")

    def _slot_groups(self):
        return (("m", "v"), ("vhat",)) if self.amsgrad else (("m", "v"),)

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int) -> None:
        vhat = slots[2] if self.amsgrad else None
        ops.adam_update(var, grad, slots[0], slots[1], vhat, self.learning_rate, self.beta_1,
                        self.beta_2, self.epsilon, self.amsgrad, step)

    def _fused_config(self):
        return {"kind": "adam", "learning_rate": self.learning_rate, "beta_1": self.beta_1,
                "beta_2": self.beta_2, "epsilon": self.epsilon, "amsgrad": self.amsgrad}

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "amsgrad": self.amsgrad})
        return config
