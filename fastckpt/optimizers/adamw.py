"""``AdamW``: Adam with decoupled weight decay (on by default), Keras' update rule."""

from __future__ import annotations

from typing import Any, Dict

from fastckpt.optimizers.adam import Adam

__all__ = ["AdamW"]


class AdamW(Adam):
    """Adam whose step first shrinks each variable: ``var -= var * weight_decay * lr``
    (``weight_decay`` defaults to 0.004 and may not be None).

    Example:
        >>> AdamW().get_config()["weight_decay"]
        0.004
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 name: str = "AdamW", **kwargs):
        if weight_decay is None:
            raise ValueError("Missing value of `weight_decay` which is required and must be a "
                             "float value.")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, name=name, weight_decay=weight_decay, **kwargs)

    def get_config(self) -> Dict[str, Any]:
        return super().get_config()
