"""``Ftrl`` (follow the regularized leader), Keras' update rule."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["Ftrl"]

_f32 = np.float32


class Ftrl(Optimizer):
    """FTRL-Proximal as tf_keras computes it, with ``p = -learning_rate_power``:
    ``gs = g + 2 l2_shrinkage var``; ``n' = n + g^2``; ``z += gs - (n'^p - n^p) / lr var``;
    ``var = (clip(z, -l1, l1) - z) / (n'^p / lr + 2 (l2 + beta / (2 lr)))``; ``n = n'``.
    Slots per variable: ``accumulator`` (starts at ``initial_accumulator_value``), ``linear``.

    Example:
        >>> Ftrl().get_config()["learning_rate_power"]
        -0.5
    """

    def __init__(self, learning_rate=0.001, learning_rate_power: float = -0.5,
                 initial_accumulator_value: float = 0.1, l1_regularization_strength: float = 0.0,
                 l2_regularization_strength: float = 0.0,
                 l2_shrinkage_regularization_strength: float = 0.0, beta: float = 0.0,
                 name: str = "Ftrl", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        checks = (("initial_accumulator_value", initial_accumulator_value),
                  ("l1_regularization_strength", l1_regularization_strength),
                  ("l2_regularization_strength", l2_regularization_strength),
                  ("l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength),
                  ("beta", beta))
        for n, v in checks:
            self._check_positive(n, v)
        if not isinstance(learning_rate_power, (int, float, np.floating, np.integer)) or \
                isinstance(learning_rate_power, bool):
            raise TypeError(f"Expected a number for learning_rate_power, got {learning_rate_power!r}")
        if learning_rate_power > 0.0:
            raise ValueError(f"`learning_rate_power` needs to be negative or zero. Received: "
                             f"learning_rate_power={learning_rate_power}.")
        self.learning_rate_power = float(learning_rate_power)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.l1_regularization_strength = float(l1_regularization_strength)
        self.l2_regularization_strength = float(l2_regularization_strength)
        self.l2_shrinkage_regularization_strength = float(l2_shrinkage_regularization_strength)
        self.beta = float(beta)
        self._init_slots(("accumulator", "linear"))

    def _slot_initial(self, slot: str) -> float:
        return self.initial_accumulator_value if slot == "accumulator" else 0.0

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr) -> None:
        lr = _f32(lr)
        l2_reg = _f32(self.l2_regularization_strength) + _f32(self.beta) / (_f32(2.0) * lr)
        ops.ftrl_update(var, grad, slots[0], slots[1], lr, -self.learning_rate_power,
                        2 * self.l2_shrinkage_regularization_strength,
                        self.l1_regularization_strength, _f32(2) * l2_reg)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"learning_rate_power": self.learning_rate_power,
                       "initial_accumulator_value": self.initial_accumulator_value,
                       "l1_regularization_strength": self.l1_regularization_strength,
                       "l2_regularization_strength": self.l2_regularization_strength,
                       "l2_shrinkage_regularization_strength":
                           self.l2_shrinkage_regularization_strength,
                       "beta": self.beta})
        return config
