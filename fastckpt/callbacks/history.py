"""``History``: what ``fit`` returns — the per-epoch logs as lists."""

from __future__ import annotations

from typing import Any, Dict, List

from fastckpt.callbacks.callback import Callback, Logs

__all__ = ["History"]


class History(Callback):
    """Records each epoch's logs; ``fit`` adds one automatically and returns it.

    Attributes:
        history: ``{'loss': [...], 'val_loss': [...], ...}``, one entry per finished epoch. It keeps
            growing if the same ``History`` is reused across ``fit`` calls, as in Keras.
        epoch: the indices of the epochs recorded by the latest ``fit`` (``[0, 1, ...]``, or starting at
            ``initial_epoch``).
        params: the ``fit`` parameters (``{'verbose': 1, 'epochs': 10, 'steps': 32}``).
        model: the model trained; its ``model.history`` is set to this object.

    Example:
        >>> h = History()
        >>> h.on_train_begin()
        >>> h.on_epoch_end(0, {"loss": 0.9, "accuracy": 0.7})
        >>> h.on_epoch_end(1, {"loss": 0.4, "accuracy": 0.9})
        >>> h.history["loss"], h.epoch
        ([0.9, 0.4], [0, 1])
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: Dict[str, List[Any]] = {}
        self.epoch: List[int] = []

    def on_train_begin(self, logs: Logs = None) -> None:
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        # Re-pointed every epoch so that model.history is this object even if the model was swapped or the
        # attribute overwritten between set_model and now.
        if self.model is not None:
            self.model.history = self
