"""``TerminateOnNaN``: stop ``fit`` as soon as the loss is NaN or infinite."""

from __future__ import annotations

import math

from fastckpt.callbacks.callback import Callback, Logs

__all__ = ["TerminateOnNaN"]


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or ±inf, printing ``Batch 3: Invalid loss, ...``.

    It listens to every training batch, so with it the training loop returns to Python per batch.

    Example:
        >>> class Model:
        ...     stop_training = False
        >>> cb = TerminateOnNaN()
        >>> cb.set_model(Model())
        >>> cb.on_train_batch_end(3, {"loss": float("nan")})
        Batch 3: Invalid loss, terminating training
        >>> cb.model.stop_training
        True
    """

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not math.isfinite(float(loss)):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True
