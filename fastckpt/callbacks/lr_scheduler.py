"""``LearningRateScheduler``: set the optimizer's learning rate from a function of the epoch."""

from __future__ import annotations

from typing import Callable

import numpy as np

from fastckpt.callbacks.callback import Callback, Logs
from fastckpt.checks import is_int

__all__ = ["LearningRateScheduler"]


class LearningRateScheduler(Callback):
    """At the start of every epoch, sets ``model.optimizer.learning_rate`` to
    ``schedule(epoch, lr)`` (``epoch`` 0-based, ``lr`` the current rate), or to ``schedule(epoch)``
    for a one-argument function; adds the rate to the epoch's logs as ``lr``, as tf.keras does.

    The schedule must return a float (a Python int is refused, as in tf.keras). ``verbose=1``
    prints the new rate at each epoch.

    Example:
        >>> class Opt:
        ...     learning_rate = 0.1
        >>> class Model:
        ...     optimizer = Opt()
        >>> cb = LearningRateScheduler(lambda epoch, lr: lr * 0.5)
        >>> cb.set_model(Model())
        >>> cb.on_epoch_begin(0)
        >>> logs = {}
        >>> cb.on_epoch_end(0, logs)
        >>> logs
        {'lr': 0.05}
    """

    def __init__(self, schedule: Callable, verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: expected schedule to be a function of the "
                            f"epoch, got {schedule!r:.80}")
        if not is_int(verbose) or verbose < 0:
            raise ValueError(f"LearningRateScheduler: expected verbose to be an integer >= 0, got "
                             f"{verbose!r}")
        self.schedule = schedule
        self.verbose = int(verbose)

    def _optimizer(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not hasattr(optimizer, "learning_rate"):
            raise ValueError('Optimizer must have a "learning_rate" attribute: compile the model '
                             'with an optimizer before fit().')
        return optimizer

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        optimizer = self._optimizer()
        try:  # tf.keras' rule: two arguments, else the old one-argument form
            lr = self.schedule(epoch, float(optimizer.learning_rate))
        except TypeError:
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, np.floating)):
            raise ValueError(f'The output of the "schedule" function should be float. Got: {lr!r}')
        optimizer.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if logs is not None:
            logs["lr"] = float(self._optimizer().learning_rate)
