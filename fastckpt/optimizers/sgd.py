"""``SGD`` with optional (Nesterov) momentum, Keras' update rule."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """Gradient descent: ``m = momentum * m - lr * g``; ``var += m`` (Nesterov:
    ``var += momentum * m - lr * g``).

    Example:
        >>> SGD(learning_rate=0.1, momentum=0.9).get_config()["nesterov"]
        False
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 name: str = "SGD", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._check_positive("momentum", momentum)
        if not float(momentum) <= 1.0:
            raise ValueError(f"SGD: expected momentum in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.slot_names = ("momentum",) if self.momentum > 0 else ()

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int) -> None:
        ops.sgd_update(var, grad, slots[0] if slots else None, self.learning_rate, self.momentum,
                       self.nesterov)

    def _fused_config(self):
        return {"kind": "sgd", "learning_rate": self.learning_rate, "momentum": self.momentum,
                "nesterov": self.nesterov}

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return config
