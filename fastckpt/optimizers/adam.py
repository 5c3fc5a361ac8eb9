"""``Adam`` with Keras' update rule, one fused native pass per variable."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["Adam"]


def _check_beta(cls: str, name: str, b) -> float:
    Optimizer._check_positive(name, b)
    if not float(b) < 1.0:
        raise ValueError(f"{cls}: expected {name} in [0, 1), got {b}")
    return float(b)


class Adam(Optimizer):
    """Adam as in Keras: ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``,
    ``var -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + epsilon)`` (``amsgrad``: with
    ``vhat = max(vhat, v)`` in place of ``v``).

    Example:
        >>> opt = Adam(learning_rate=1e-3)
        >>> opt.get_config()["epsilon"]
        1e-07
    """

    _legacy_slots = {}

    def __init__(self, learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, adaptive_epsilon: bool = False, amsgrad: bool = False,
                 name: str = "Adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        cls = type(self).__name__
        self.beta_1 = _check_beta(cls, "beta_1", beta_1)
        self.beta_2 = _check_beta(cls, "beta_2", beta_2)
        self._check_positive("epsilon", epsilon)
        self.epsilon = float(epsilon)
        self.adaptive_epsilon = bool(adaptive_epsilon)
        self.amsgrad = bool(amsgrad)
        self._init_slots(("m", "v", "vhat") if self.amsgrad else ("m", "v"))

    def _slot_groups(self):
        return (("m", "v"), ("vhat",)) if self.amsgrad else (("m", "v"),)

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr) -> None:
        eps = self.epsilon
        if self.adaptive_epsilon:
            b2p = np.power(np.float32(self.beta_2), np.float32(step))
            eps = np.float32(eps) * np.sqrt(np.float32(1) - b2p)
        vhat = slots[2] if self.amsgrad else None
        ops.adam_update(var, grad, slots[0], slots[1], vhat, lr, self.beta_1, self.beta_2, eps,
                        self.amsgrad, step)

    def _fused_config(self):
        if not self._plain() or self.adaptive_epsilon or type(self).__name__ not in ("Adam", "AdamW"):
            return None
        return {"kind": "adam", "learning_rate": self.learning_rate, "beta_1": self.beta_1,
                "beta_2": self.beta_2, "epsilon": self.epsilon, "amsgrad": self.amsgrad}

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "amsgrad": self.amsgrad})
        if self.adaptive_epsilon:
            config["adaptive_epsilon"] = True
        return config
