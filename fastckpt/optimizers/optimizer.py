"""``Optimizer``: iterations, learning rate, per-variable slots, and ``apply_gradients``.

Variable order follows tf.keras' optimizer (``variables[0]`` is ``iterations``, then each slot per
trainable variable in model order), which is also the order checkpoints store them in.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from fastckpt.checkpoint.object_graph import TrackableList
from fastckpt.checks import is_real
from fastckpt.variables import Variable

__all__ = ["Optimizer"]


class Optimizer:
    #: Names of the per-variable slots, in storage order (e.g. ``("m", "v")`` for Adam).
    slot_names: Tuple[str, ...] = ()

    def __init__(self, learning_rate: float = 0.001, name: str = "Optimizer", **kwargs):
        for k in ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay"):
            if kwargs.get(k) is not None:
                raise NotImplementedError(f"{type(self).__name__}: {k} is not supported yet")
            kwargs.pop(k, None)
        kwargs.pop("use_ema", None)
        kwargs.pop("jit_compile", None)
        kwargs.pop("is_legacy_optimizer", None)
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        self.name = name
        self._check_positive("learning_rate", learning_rate)
        self._learning_rate = Variable(np.float32(learning_rate), name=f"{name}/learning_rate",
                                       trainable=False)
        self._iterations = Variable(np.int64(0), name=f"{name}/iteration", trainable=False)
        self._built_for: List[Variable] = []
        self._slots: List[List[Variable]] = []  # per trainable variable, one per slot name

    @staticmethod
    def _check_positive(name: str, value) -> None:
        if not is_real(value):
            raise TypeError(f"Expected a number for {name}, got {value!r}")
        if not float(value) >= 0.0:
            raise ValueError(f"Expected {name} >= 0, got {value}")

    # --- state ------------------------------------------------------------------------------
    @property
    def iterations(self) -> Variable:
        return self._iterations

    @property
    def learning_rate(self) -> float:
        return float(self._learning_rate.value)

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._check_positive("learning_rate", value)
        self._learning_rate.assign(np.float32(value))

    lr = learning_rate

    @property
    def built(self) -> bool:
        return bool(self._built_for) or bool(self._slots)

    def build(self, var_list: Sequence[Variable]) -> None:
        """Create the slots for ``var_list`` (idempotent for the same list)."""
        var_list = list(var_list)
        if self._built_for and [id(v) for v in self._built_for] == [id(v) for v in var_list]:
            return
        self._built_for = var_list
        self._slots = [[Variable(np.zeros(v.shape, v.dtype),
                                 name=f"{self.name}/{s}/{v.path}", trainable=False)
                        for s in self.slot_names] for v in var_list]

    #: Slots stored per variable in one pass (e.g. Adam's m, v); later groups follow the whole
    #: first pass (Adam's amsgrad vhat), which is tf.keras' variable order.
    def _slot_groups(self) -> Tuple[Tuple[str, ...], ...]:
        return (self.slot_names,) if self.slot_names else ()

    @property
    def variables(self) -> List[Variable]:
        """``[iterations, m0, v0, m1, v1, ...]``: tf.keras' order, which checkpoints keep."""
        out = [self._iterations]
        for group in self._slot_groups():
            for slots in self._slots:
                out.extend(slots[self.slot_names.index(s)] for s in group)
        return out

    def _trackable_children(self, for_restore: bool = False):
        edges = [("_iterations", self._iterations), ("_learning_rate", self._learning_rate),
                 ("_variables", TrackableList(self.variables))]
        if for_restore:  # names of tf.keras' legacy optimizers, matched but never written
            edges += [("iter", self._iterations), ("learning_rate", self._learning_rate),
                      ("lr", self._learning_rate)]
        return edges

    def get_slot(self, var: Variable, slot_name: str) -> Variable:
        ids = [id(v) for v in self._built_for]
        if id(var) not in ids or slot_name not in self.slot_names:
            raise ValueError(f"{self.name} has no slot {slot_name!r} for variable {var.name}")
        i = ids.index(id(var))
        return self._slots[i][self.slot_names.index(slot_name)]

    # --- updates ----------------------------------------------------------------------------
    def apply_gradients(self, grads_and_vars: Iterable[Tuple[np.ndarray, Variable]]) -> None:
        pairs = list(grads_and_vars)
        variables = [v for _, v in pairs]
        self.build(variables)
        step = int(self._iterations.value) + 1
        for (grad, var), slots in zip(pairs, self._slots):
            grad = np.asarray(grad)
            if grad.shape != var.shape or grad.dtype != np.float32 or not grad.flags.c_contiguous:
                grad = np.ascontiguousarray(grad, np.float32)
                if grad.shape != var.shape:
                    raise ValueError(f"Gradient for {var.name}: expected shape {var.shape}, "
                                     f"got {grad.shape}")
            self._update(var.value, grad, [s.value for s in slots], step)
        self._iterations.value[...] = step

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int) -> None:
        raise NotImplementedError

    def _fused_config(self) -> Optional[Dict[str, Any]]:
        """The native trainer's optimizer config (``kernels/trainer.h``), or None when this
        optimizer, as configured, has no whole-epoch native loop (the Trainer then runs the
        layer-by-layer path, whose updates are the same kernels, step by step)."""
        return None

    # --- config -----------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "learning_rate": self.learning_rate}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Optimizer":
        config = dict(config)
        for k in ("decay", "is_legacy_optimizer", "ema_momentum", "ema_overwrite_frequency",
                  "loss_scale_factor", "gradient_accumulation_steps"):
            config.pop(k, None)
        if isinstance(config.get("learning_rate"), dict):
            raise NotImplementedError("learning-rate schedules are not supported yet")
        return cls(**config)
