"""``Adagrad``, Keras' update rule."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """``acc += g^2; var -= lr g / sqrt(acc + epsilon)``; ``acc`` starts at
    ``initial_accumulator_value``.

    Example:
        >>> Adagrad().get_config()["initial_accumulator_value"]
        0.1
    """

    def __init__(self, learning_rate=0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, name: str = "Adagrad", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._check_positive("initial_accumulator_value", initial_accumulator_value)
        self._check_positive("epsilon", epsilon)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)
        self._init_slots(("accumulator",))

    def _slot_initial(self, slot: str) -> float:
        return self.initial_accumulator_value

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr) -> None:
        ops.adagrad_update(var, grad, slots[0], lr, self.epsilon)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"initial_accumulator_value": self.initial_accumulator_value,
                       "epsilon": self.epsilon})
        return config
