"""``RMSprop`` (plain, with momentum, centered), Keras' update rule."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """``vel = rho vel + (1 - rho) g^2``; centered: ``ag = rho ag + (1 - rho) g`` and the
    denominator is ``vel - ag^2 + eps`` (else ``vel + eps``); ``inc = lr g / sqrt(den)``;
    with momentum ``mom = momentum mom + inc, var -= mom``, else ``var -= inc``.

    Slots as tf_keras orders them: every ``velocity``, then every ``momentum`` (momentum > 0),
    then every ``average_gradient`` (centered).

    Example:
        >>> RMSprop().get_config()["rho"]
        0.9
    """

    _legacy_slots = {"rms": "velocity", "mg": "average_gradient"}

    def __init__(self, learning_rate=0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, name: str = "RMSprop", **kwargs):
        kwargs.setdefault("ema_overwrite_frequency", 100)  # tf_keras' default for RMSprop
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        for n, v in (("rho", rho), ("momentum", momentum), ("epsilon", epsilon)):
            self._check_positive(n, v)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.centered = bool(centered)
        names = ["velocity"]
        if self.momentum > 0:
            names.append("momentum")
        if self.centered:
            names.append("average_gradient")
        self._init_slots(names)

    def _slot_groups(self):
        return tuple((s,) for s in self.slot_names)

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr) -> None:
        names = tuple(self.slot_names)
        mom = slots[names.index("momentum")] if self.momentum > 0 else None
        ag = slots[names.index("average_gradient")] if self.centered else None
        ops.rmsprop_update(var, grad, slots[0], mom, ag, lr, self.rho, 1 - self.rho, self.momentum,
                           self.epsilon)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                       "centered": self.centered})
        return config
