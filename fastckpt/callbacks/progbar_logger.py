"""``ProgbarLogger``: the callback that draws Keras' progress bar for ``fit``, ``evaluate`` and ``predict``."""

from __future__ import annotations

import sys
from typing import IO, Any, Dict, Iterable, Optional

from fastckpt.callbacks.callback import Callback, Logs
from fastckpt.checks import is_int
from fastckpt.utils.progbar import Progbar, _stream_is_interactive

__all__ = ["ProgbarLogger"]


class ProgbarLogger(Callback):
    """Prints ``Epoch 1/10`` and a progress bar per epoch (and one for ``evaluate``/``predict``).

    ``CallbackList(add_progbar=True)`` adds one; what it prints depends on ``params['verbose']``:
    0 nothing, 1 a live bar (only the final line of each epoch when stdout is not a terminal), 2 one
    summary line per epoch. Validation inside ``fit`` is silent; its ``val_*`` results appear on the
    epoch's final line.

    Args:
        count_mode: only ``'steps'`` — the bar counts batches, as ``fit`` does in Keras 2.
        stateful_metrics: names shown exactly as logged. ``None`` (the default) shows every logged value as
            given, because the training loop already logs running means (Keras 2's convention); list names
            to have the bar average the others over steps instead.
        stream: where to print; ``None`` means ``sys.stdout`` at each write.
        dynamic: force (or forbid) in-place redrawing; ``None`` detects a terminal or notebook.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> pl = ProgbarLogger(stream=out)
        >>> pl.set_params({"verbose": 2, "epochs": 2, "steps": 32})
        >>> pl.on_train_begin()
        >>> pl.on_epoch_begin(0)
        >>> pl.on_epoch_end(0, {"loss": 0.4266, "accuracy": 0.888})
        >>> print(out.getvalue().splitlines()[0])
        Epoch 1/2
        >>> out.getvalue().splitlines()[1].startswith("32/32 - 0s - loss: 0.4266 - accuracy: 0.8880 - ")
        True
    """

    def __init__(
        self,
        count_mode: str = "steps",
        stateful_metrics: Optional[Iterable[str]] = None,
        *,
        stream: Optional[IO[str]] = None,
        dynamic: Optional[bool] = None,
    ) -> None:
        super().__init__()
        if count_mode != "steps":
            raise ValueError(
                f"Expected count_mode='steps' (fastckpt's loops count batches, not samples), got {count_mode!r}"
            )
        if isinstance(stateful_metrics, str):
            raise TypeError(f"Expected stateful_metrics to be an iterable of names, got the string {stateful_metrics!r}")
        self.count_mode = count_mode
        self.stateful_metrics = None if stateful_metrics is None else set(stateful_metrics)
        self._stream = stream
        self._dynamic = dynamic
        self.verbose = 1
        self.epochs = 1
        self.target: Optional[int] = None
        self.progbar: Optional[Progbar] = None
        self.seen = 0
        self._in_fit = False

    def set_params(self, params: Dict[str, Any]) -> None:
        super().set_params(params)
        verbose = params.get("verbose", 1)
        if verbose == "auto":  # the model normally resolves this; Keras 2 resolves 'auto' to 1
            verbose = 1
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"Expected params['verbose'] to be 0, 1, 2 or 'auto', got {verbose!r}")
        epochs = params.get("epochs", 1)
        steps = params.get("steps")
        if steps is not None and (not is_int(steps) or steps < 0):
            raise ValueError(f"Expected params['steps'] to be None or an integer >= 0, got {steps!r}")
        self.verbose = int(verbose)
        self.epochs = epochs
        self.target = steps

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stdout

    @property
    def dynamic(self) -> bool:
        """Whether the live bar redraws in place (a terminal or notebook) rather than printing final lines."""
        return _stream_is_interactive(self.stream) if self._dynamic is None else self._dynamic

    def implements_batch_hooks(self, kind: str) -> bool:
        super().implements_batch_hooks(kind)  # validates `kind`
        if kind == "test" and self._in_fit:
            return False  # validation inside fit draws no bar
        # A bar is only redrawn during an epoch when it is live; an unknown step count is learnt by counting.
        return self.verbose == 1 and (self.dynamic or self.target is None) or (
            self.verbose == 2 and self.target is None)

    # -- fit ---------------------------------------------------------------------------------------------

    def on_train_begin(self, logs: Logs = None) -> None:
        self._in_fit = True

    def on_train_end(self, logs: Logs = None) -> None:
        # Reset so that the same instance reused for a later evaluate() draws its bar.
        self._in_fit = False

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self._start_bar()
        if self.verbose and self.epochs > 1:
            self._print(f"Epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        self._step(batch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        self._finish_bar(logs)

    # -- evaluate ----------------------------------------------------------------------------------------

    def on_test_begin(self, logs: Logs = None) -> None:
        if not self._in_fit:
            self._start_bar()

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        if not self._in_fit:
            self._step(batch, logs)

    def on_test_end(self, logs: Logs = None) -> None:
        if not self._in_fit:
            self._finish_bar(logs)

    # -- predict -----------------------------------------------------------------------------------------

    def on_predict_begin(self, logs: Logs = None) -> None:
        self._start_bar()

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        self._step(batch, None)  # the logs hold the batch's outputs, which are not for display

    def on_predict_end(self, logs: Logs = None) -> None:
        self._finish_bar(None)

    # -- internals ---------------------------------------------------------------------------------------

    def _start_bar(self) -> None:
        self.seen = 0
        self.progbar = None
        if self.verbose:
            self.progbar = Progbar(
                target=self.target,
                verbose=self.verbose,
                stateful_metrics=self.stateful_metrics,
                stream=self._stream,
                dynamic=self.dynamic,
            )

    def _values(self, logs: Logs) -> list:
        if not logs:
            return []
        if self.stateful_metrics is None and self.progbar is not None:
            self.progbar.stateful_metrics.update(logs)
        return list(logs.items())

    def _step(self, batch: int, logs: Logs) -> None:
        self.seen = batch + 1
        if self.progbar is not None and self.verbose == 1:
            self.progbar.update(self.seen, self._values(logs), finalize=False)

    def _finish_bar(self, logs: Logs) -> None:
        if self.progbar is None:
            return
        if self.progbar.target is None:
            # No step count was given: the batches counted during the epoch are the target.
            self.progbar.target = self.seen
        self.progbar.update(self.progbar.target, self._values(logs), finalize=True)
        self.progbar = None

    def _print(self, text: str) -> None:
        stream = self.stream
        stream.write(text + "\n")
        flush = getattr(stream, "flush", None)
        if callable(flush):
            flush()
