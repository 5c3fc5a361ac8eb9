"""``SGD`` with optional (Nesterov) momentum, Keras' update rule."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """Gradient descent: ``m = momentum * m - lr * g``; ``var += m`` (Nesterov:
    ``var += momentum * m - lr * g``). As in tf_keras, every variable has an ``m`` slot even
    with momentum 0 (it then stays zero: that step never reads it).

    Example:
        >>> SGD(learning_rate=0.1, momentum=0.9).get_config()["nesterov"]
        False
    """

    _legacy_slots = {"momentum": "m"}

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False,
                 name: str = "SGD", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._check_positive("momentum", momentum)
        if not float(momentum) <= 1.0:
            raise ValueError(f"`momentum` must be between [0, 1]. Received: momentum={momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self._init_slots(("m",))

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr) -> None:
        ops.sgd_update(var, grad, slots[0] if self.momentum > 0 else None, lr, self.momentum,
                       self.nesterov)

    def _fused_config(self):
        if not self._plain():
            return None
        return {"kind": "sgd", "learning_rate": self.learning_rate, "momentum": self.momentum,
                "nesterov": self.nesterov}

    def _keras3_variables(self):
        # Keras 3 makes no momentum slots when momentum is 0.
        if self.momentum > 0:
            return self.variables
        return [self._iterations] + list(self._averages)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return config
