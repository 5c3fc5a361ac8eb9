"""``ReduceLROnPlateau``: lower the learning rate when a monitored metric stops improving."""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict

import numpy as np

from fastckpt.callbacks.callback import Logs
from fastckpt.callbacks.monitor import MonitorCallback
from fastckpt.checks import is_int, is_real

__all__ = ["ReduceLROnPlateau"]


class ReduceLROnPlateau(MonitorCallback):
    """Multiplies the learning rate by ``factor`` once ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs, never below ``min_lr``; then waits ``cooldown`` epochs
    before counting again. Adds the epoch's rate to the logs as ``lr``, as tf.keras does.

    Args:
        monitor: the ``logs`` key to watch (``'val_loss'``).
        factor: the multiplier, < 1.
        patience: epochs without improvement before a reduction.
        verbose: 1 prints each reduction.
        mode: ``'min'``, ``'max'`` or ``'auto'`` (max when the name contains ``'acc'``, as in
            tf.keras' rule for this callback).
        min_delta: the smallest change that counts as an improvement.
        cooldown: epochs after a reduction in which nothing is counted.
        min_lr: the floor of the learning rate.

    Example:
        >>> class Opt:
        ...     learning_rate = 1.0
        >>> class Model:
        ...     optimizer = Opt()
        >>> cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1)
        >>> cb.set_model(Model())
        >>> cb.on_train_begin()
        >>> for epoch, loss in enumerate([1.0, 1.0, 1.0]):
        ...     cb.on_epoch_end(epoch, {"loss": loss})
        >>> Model.optimizer.learning_rate
        0.25
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0, **kwargs) -> None:
        if "epsilon" in kwargs:  # the old name of min_delta
            min_delta = kwargs.pop("epsilon")
            warnings.warn("`epsilon` argument is deprecated, use `min_delta` instead.",
                          DeprecationWarning, stacklevel=2)
        if kwargs:
            raise TypeError(f"ReduceLROnPlateau: unexpected keyword argument(s) {sorted(kwargs)}")
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"Expected monitor to be a metric name such as 'val_loss', got {monitor!r}")
        for name, value in (("factor", factor), ("min_delta", min_delta), ("min_lr", min_lr)):
            if not is_real(value) or math.isnan(value):
                raise TypeError(f"ReduceLROnPlateau: expected {name} to be a number, got {value!r}")
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. Got {factor}")
        for name, value in (("patience", patience), ("cooldown", cooldown), ("verbose", verbose)):
            if not is_int(value) or value < 0:
                raise ValueError(f"ReduceLROnPlateau: expected {name} to be an integer >= 0, got "
                                 f"{value!r}")
        super().__init__(monitor, mode)
        self.factor = float(factor)
        self.min_delta = float(min_delta)
        self.min_lr = float(min_lr)
        self.patience = int(patience)
        self.cooldown = int(cooldown)
        self.verbose = int(verbose)
        self.mode = mode if mode in ("auto", "min", "max") else "auto"
        self._reset()

    @staticmethod
    def auto_maximizes(monitor: str) -> bool:
        return "acc" in monitor

    def _reset(self) -> None:
        self.best = self.worst_value()
        self.cooldown_counter = 0
        self.wait = 0

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _improves(self, current: float) -> bool:
        if self.maximize:
            return current > self.best + self.min_delta
        return current < self.best - self.min_delta

    def on_train_begin(self, logs: Logs = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        logs = {} if logs is None else logs
        optimizer = self.model.optimizer
        logs["lr"] = float(optimizer.learning_rate)
        current: Any = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` "
                          f"which is not available. Available metrics are: {','.join(logs)}",
                          RuntimeWarning, stacklevel=3)
            return
        current = float(np.mean(current))
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improves(current):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = np.float32(optimizer.learning_rate)
                if old_lr > np.float32(self.min_lr):
                    new_lr = max(float(old_lr) * self.factor, self.min_lr)
                    optimizer.learning_rate = new_lr
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                              f"{new_lr}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    # BackupAndRestore keeps these, so a resumed run reduces the rate when the original would.
    def get_training_state(self) -> Dict[str, Any]:
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": self.best}

    def set_training_state(self, state: Dict[str, Any]) -> None:
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.best = float(state["best"])
