"""``Nadam``, Keras' update rule (with its running product of momentum coefficients)."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from fastckpt import ops
from fastckpt.optimizers.adam import _check_beta
from fastckpt.optimizers.optimizer import Optimizer
from fastckpt.variables import Variable

__all__ = ["Nadam"]

_f32 = np.float32


class Nadam(Optimizer):
    """Adam with Nesterov momentum (Dozat): ``u_t = b1 (1 - 0.5 * 0.96^t)``, ``P_t`` the product
    of ``u_1..u_t`` (the ``_u_product`` variable, saved as tf_keras saves it);
    ``mhat = u_{t+1} m / (1 - P_{t+1}) + (1 - u_t) g / (1 - P_t)``,
    ``var -= lr mhat / (sqrt(v / (1 - b2^t)) + epsilon)``.

    ``P_t`` follows ``iterations``: after a restore it is recomputed from the step count in the
    same float32 order, so a resumed run is bit-identical whatever the file kept. (tf_keras' own
    ``fit`` multiplies it several times per step -- its cache counter is a Python int advanced
    while tracing: after 3 steps of a 2-layer model it holds 0.00017 instead of 0.114 -- so
    its graph-mode trajectories differ from its eager ``apply_gradients``; this follows the
    eager, intended formula.)

    Example:
        >>> Nadam().get_config()["beta_1"]
        0.9
    """

    def __init__(self, learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, name: str = "Nadam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = _check_beta("Nadam", "beta_1", beta_1)
        self.beta_2 = _check_beta("Nadam", "beta_2", beta_2)
        self._check_positive("epsilon", epsilon)
        self.epsilon = float(epsilon)
        self._init_slots(("m", "v"))
        self._u_product = Variable(_f32(1.0), name=f"{name}/u_product", trainable=False)
        self._u_step, self._u_last = 0, _f32(1.0)
        self._step_params = None

    def _u(self, t: int) -> np.float32:
        return _f32(self.beta_1) * (_f32(1.0) - _f32(0.5) * np.power(_f32(0.96), _f32(t)))

    def _build_extra(self, var_list) -> None:
        self._u_product.value[...] = _f32(1.0)
        self._u_step, self._u_last = 0, _f32(1.0)

    def _extra_trackables(self):
        return [("_u_product", self._u_product)]

    def _keras3_variables(self):
        return list(self.variables) + [self._u_product]  # Keras 3 lists u_product after the slots

    def _begin_step(self, step: int) -> None:
        if self._u_step != step - 1 or self._u_product.value != self._u_last:
            # restored, rewound or assigned: P_{step-1} from the step count
            p = _f32(1.0)
            for t in range(1, step):
                q = p * self._u(t)
                if q == p:  # a fixed point (0 or the smallest subnormals) within ~1000 steps:
                    break   # u_t only grows towards b1 <= 1, and rounding is monotonic
                p = q
            self._u_product.value[...] = p
        u_t, u_next = self._u(step), self._u(step + 1)
        prod = _f32(self._u_product.value) * u_t
        self._u_product.value[...] = prod
        self._u_step, self._u_last = step, prod
        prod_next = prod * u_next
        one = _f32(1.0)
        b1, b2 = _f32(self.beta_1), _f32(self.beta_2)
        b2p = np.power(b2, _f32(step))
        self._step_params = (one - b1, one - b2, u_next, one - prod_next, one - u_t, one - prod,
                             one - b2p)

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr) -> None:
        ops.nadam_update(var, grad, slots[0], slots[1], lr, *self._step_params, self.epsilon)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config
