"""``MonitorCallback``: the monitor / mode / best logic of callbacks that watch one ``logs`` value
(``EarlyStopping``, ``ModelCheckpoint``; later ``ReduceLROnPlateau``)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from fastckpt.callbacks.callback import Callback

__all__ = ["MonitorCallback", "MODES"]

MODES = ("auto", "min", "max")


class MonitorCallback(Callback):
    """Base of callbacks that watch ``monitor`` in the logs and keep its ``best`` value.

    ``mode`` is ``'min'``, ``'max'`` or ``'auto'``; an unknown mode warns and falls back to
    ``'auto'``, as tf.keras does. ``'auto'`` picks the direction from the metric's name with
    ``auto_maximizes`` (tf.keras' rule differs between its callbacks; each subclass keeps its own).

    Attributes:
        monitor: the ``logs`` key watched.
        maximize: whether larger values are better.
        monitor_op: ``np.greater`` or ``np.less``: ``monitor_op(value, best)`` when ``value`` is
            better than ``best``.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto") -> None:
        super().__init__()
        if mode not in MODES:
            warnings.warn(f"{type(self).__name__} mode {mode!r} is unknown, fallback to auto mode.",
                          stacklevel=3)
            mode = "auto"
        self.monitor = monitor
        self.maximize = mode == "max" or (mode == "auto" and self.auto_maximizes(monitor))
        self.monitor_op = np.greater if self.maximize else np.less

    @staticmethod
    def auto_maximizes(monitor: str) -> bool:
        """tf.keras' ``EarlyStopping`` rule: accuracies and AUCs improve upwards, everything else
        (losses, errors) downwards."""
        return monitor.endswith(("acc", "accuracy", "auc"))

    def worst_value(self) -> float:
        """What any value beats: the starting ``best``."""
        return -math.inf if self.maximize else math.inf

    def is_improvement(self, value: float, reference: float, min_delta: float = 0.0) -> bool:
        """Whether ``value`` beats ``reference`` by more than ``min_delta``."""
        if self.maximize:
            return value - min_delta > reference
        return value + min_delta < reference
