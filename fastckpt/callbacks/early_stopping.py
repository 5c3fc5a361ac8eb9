"""``EarlyStopping``: stop ``fit`` when a monitored metric stops improving."""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional

import numpy as np

from fastckpt.callbacks.callback import Logs
from fastckpt.callbacks.monitor import MonitorCallback
from fastckpt.checks import is_int, is_real

__all__ = ["EarlyStopping"]


class EarlyStopping(MonitorCallback):
    """Sets ``model.stop_training`` once ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: the ``logs`` key to watch, e.g. ``'val_loss'`` or ``'val_accuracy'``.
        min_delta: an improvement smaller than this (in absolute value) does not count.
        patience: epochs without improvement to tolerate before stopping.
        verbose: 1 prints ``Epoch 5: early stopping`` (and the restore message) at the end of training.
        mode: ``'min'``, ``'max'`` or ``'auto'`` (max for names ending in "acc", "accuracy" or "auc",
            else min, as in tf.keras); an unknown mode warns and falls back to ``'auto'``.
        baseline: a value the metric must beat; until it does, the patience counter keeps running.
        restore_best_weights: at the end of training, put back the weights of the best epoch (the first
            monitored epoch's if none improved).
        start_from_epoch: epochs to ignore at the start (a warm-up in which no improvement is expected).

    A missing ``monitor`` key warns (listing the keys that are there) and is skipped, as in Keras.

    Example:
        >>> class Model:
        ...     stop_training = False
        ...     def get_weights(self): return []
        ...     def set_weights(self, w): pass
        >>> es = EarlyStopping(monitor="loss", patience=2)  # stop after 2 epochs without improvement
        >>> es.set_model(Model())
        >>> es.on_train_begin()
        >>> for epoch, loss in enumerate([0.9, 0.5, 0.6, 0.7]):
        ...     es.on_epoch_end(epoch, {"loss": loss})
        ...     if es.model.stop_training:
        ...         break
        >>> epoch, es.best, es.stopped_epoch
        (3, 0.5, 3)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: Optional[float] = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"Expected monitor to be a metric name such as 'val_loss', got {monitor!r}")
        if not is_real(min_delta) or math.isnan(min_delta):
            raise TypeError(f"Expected min_delta to be a number, got {min_delta!r}")
        for name, value in (("patience", patience), ("start_from_epoch", start_from_epoch), ("verbose", verbose)):
            if not is_int(value) or value < 0:
                raise ValueError(f"Expected {name} to be an integer >= 0, got {value!r}")
        if baseline is not None and (not is_real(baseline)):
            raise TypeError(f"Expected baseline to be None or a number, got {baseline!r}")
        super().__init__(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = int(verbose)
        self.mode = mode if mode in ("auto", "min", "max") else "auto"
        self.baseline = None if baseline is None else float(baseline)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = self.worst_value()
        self.best_weights: Optional[List[np.ndarray]] = None
        self.best_epoch = 0

    def _improves(self, value: float, reference: float) -> bool:
        return self.is_improvement(value, reference, self.min_delta)

    def _snapshot(self) -> List[np.ndarray]:
        # Copies: a model may hand out views of its live buffers, which the next step would overwrite.
        return [np.array(w, copy=True) for w in self.model.get_weights()]

    def get_monitor_value(self, logs: Logs) -> Optional[float]:
        logs = logs or {}
        value: Any = logs.get(self.monitor)
        if value is None:
            warnings.warn(
                f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                f"Available metrics are: {','.join(logs)}",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return float(np.mean(value))

    def on_train_begin(self, logs: Logs = None) -> None:
        self._reset()  # so the same instance can be passed to several fit() calls

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        value = self.get_monitor_value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # Something to restore even if no epoch ever beats the first.
            self.best_weights = self._snapshot()
            self.best_epoch = epoch
        self.wait += 1
        if self._improves(value, self.best):
            self.best = value
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self._snapshot()
            # Patience restarts only once the baseline, too, is beaten.
            if self.baseline is None or self._improves(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    # BackupAndRestore saves and restores these so a resumed run stops where the original would.
    def get_training_state(self) -> Dict[str, Any]:
        return {"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best": self.best,
                "best_epoch": self.best_epoch}

    def set_training_state(self, state: Dict[str, Any]) -> None:
        self.wait = int(state["wait"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])

    def on_train_end(self, logs: Logs = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)
