"""``CallbackList``: one object the training loop calls, which forwards each hook to every callback."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional

from fastckpt.callbacks.callback import Callback, Logs
from fastckpt.callbacks.history import History
from fastckpt.callbacks.progbar_logger import ProgbarLogger

__all__ = ["CallbackList"]


def _dict(logs: Logs) -> Dict[str, Any]:
    return {} if logs is None else logs


class CallbackList:
    """Holds the callbacks of one ``fit``/``evaluate``/``predict`` call and calls them in order.

    Mirrors tf.keras 2.x: with ``add_history`` a ``History`` is appended unless one is given, then with
    ``add_progbar`` a ``ProgbarLogger`` — so the bar comes last and a message printed by a user callback
    in ``on_epoch_end`` (``ModelCheckpoint``'s "Epoch 1: saving model to ...") lands before the epoch's
    final bar line. ``set_model`` also points ``model.history`` at the ``History``.

    The training loop runs batches inside C++ and should only come back to Python per batch when someone
    listens: ask ``should_call_batch_hooks('train')`` (or the ``should_call_*_batch_hooks`` properties)
    at the start of each epoch/validation/predict pass — the answer can change once ``fit`` has begun,
    because validation inside ``fit`` draws no bar. When ``batch_hooks_are_progress_only(kind)`` is true
    the only listener is the progress bar, which needs just the latest batch index and running logs, so
    the loop may report every k-th batch (always including the last one of the pass).

    Args:
        callbacks: ``Callback`` instances (a list, tuple, or ``None``).
        add_history: append a ``History`` unless the list already holds one.
        add_progbar: append a ``ProgbarLogger`` unless the list already holds one.
        model: passed to ``set_model`` when given.
        **params: passed to ``set_params`` when given: ``verbose``, ``epochs``, ``steps``.

    Example:
        >>> class Model:
        ...     stop_training = False
        >>> model = Model()
        >>> cbs = CallbackList(None, add_history=True, add_progbar=True, model=model,
        ...                    verbose=0, epochs=2, steps=32)
        >>> [type(cb).__name__ for cb in cbs]
        ['History', 'ProgbarLogger']
        >>> cbs.on_train_begin()
        >>> for epoch in range(2):
        ...     cbs.on_epoch_begin(epoch)
        ...     cbs.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
        >>> cbs.on_train_end()
        >>> model.history.history["loss"], cbs.should_call_train_batch_hooks
        ([1.0, 0.5], False)
    """

    def __init__(
        self,
        callbacks: Optional[Iterable[Callback]] = None,
        add_history: bool = False,
        add_progbar: bool = False,
        model: Any = None,
        **params: Any,
    ) -> None:
        if callbacks is None:
            self.callbacks: List[Callback] = []
        elif isinstance(callbacks, Callback):
            self.callbacks = [callbacks]  # Keras flattens a lone callback too
        elif isinstance(callbacks, (list, tuple)):
            self.callbacks = list(callbacks)
        else:
            raise TypeError(
                f"Expected callbacks to be a list of Callback instances or None, got {type(callbacks).__name__}"
            )
        for i, cb in enumerate(self.callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"Expected every callback to be a fastckpt.keras.callbacks.Callback instance, "
                    f"got {type(cb).__name__} at index {i}"
                )
        # Under data parallelism, callbacks that write side files (CSV logs, TensorBoard) or
        # print run on rank 0 only.
        strategy = getattr(model, "_distribute_strategy", None)
        if strategy is not None and strategy.rank != 0:
            self.callbacks = [c for c in self.callbacks if not getattr(c, "_chief_only", False)]
        self._history: Optional[History] = next((c for c in self.callbacks if isinstance(c, History)), None)
        self._progbar: Optional[ProgbarLogger] = next(
            (c for c in self.callbacks if isinstance(c, ProgbarLogger)), None)
        if add_history and self._history is None:
            self._history = History()
            self.callbacks.append(self._history)
        if add_progbar and self._progbar is None:
            self._progbar = ProgbarLogger(count_mode="steps")
            self.callbacks.append(self._progbar)
        self.model: Any = None
        self.params: Dict[str, Any] = {}
        if model is not None:
            self.set_model(model)
        if params:
            self.set_params(params)

    # -- container ---------------------------------------------------------------------------------------

    def append(self, callback: Callback) -> None:
        if not isinstance(callback, Callback):
            raise TypeError(f"Expected a Callback instance, got {type(callback).__name__}")
        self.callbacks.append(callback)
        if self.model is not None:
            callback.set_model(self.model)
        if self.params:
            callback.set_params(self.params)

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    @property
    def history(self) -> Optional[History]:
        """The ``History`` in this list (the one ``fit`` returns), or ``None``."""
        return self._history

    def set_params(self, params: Dict[str, Any]) -> None:
        if not isinstance(params, dict):
            raise TypeError(f"Expected params to be a dict, got {type(params).__name__}")
        self.params = params
        for cb in self.callbacks:
            cb.set_params(params)

    def set_model(self, model: Any) -> None:
        self.model = model
        if self._history is not None:
            model.history = self._history
        for cb in self.callbacks:
            cb.set_model(model)

    # -- which batch hooks are worth calling ---------------------------------------------------------------

    def should_call_batch_hooks(self, kind: str) -> bool:
        """Whether any callback listens to ``kind`` ('train', 'test', 'predict') batch hooks right now."""
        return any(cb.implements_batch_hooks(kind) for cb in self.callbacks)

    def batch_hooks_are_progress_only(self, kind: str) -> bool:
        """True when the only ``kind`` batch listener is a ``ProgbarLogger`` (hooks may be coalesced)."""
        listeners = [cb for cb in self.callbacks if cb.implements_batch_hooks(kind)]
        return bool(listeners) and all(type(cb) is ProgbarLogger for cb in listeners)

    @property
    def should_call_train_batch_hooks(self) -> bool:
        return self.should_call_batch_hooks("train")

    @property
    def should_call_test_batch_hooks(self) -> bool:
        return self.should_call_batch_hooks("test")

    @property
    def should_call_predict_batch_hooks(self) -> bool:
        return self.should_call_batch_hooks("predict")

    @property
    def needs_batch_hooks(self) -> bool:
        """Whether any batch hook of any kind has a listener."""
        return any(self.should_call_batch_hooks(k) for k in ("train", "test", "predict"))

    # -- forwarding --------------------------------------------------------------------------------------
    # Batch hooks are forwarded unconditionally: the flags above are for the loop to skip the call; a
    # callback that does not listen simply runs Callback's empty method. Every callback receives the same
    # dict (``{}`` for None, as in Keras), so a value one callback adds is seen by those after it — e.g.
    # recorded by History, which sits after the user's callbacks.

    def set_peer_callbacks(self) -> None:
        """Show every callback the whole list (``Callback.set_peer_callbacks``)."""
        for cb in self.callbacks:
            cb.set_peer_callbacks(list(self.callbacks))

    def resume_epoch(self, initial_epoch: int) -> int:
        """The epoch ``fit`` starts from: ``initial_epoch`` or a later one a callback restored."""
        for cb in self.callbacks:
            resume = cb.resume_epoch()
            if resume is not None:
                initial_epoch = max(initial_epoch, resume)
        return initial_epoch

    def on_checkpoint_committed(self, epoch: int, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_checkpoint_committed(epoch, logs)

    def on_train_begin(self, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs)

    # Keras 2 names for the train-batch hooks.
    on_batch_begin = on_train_batch_begin
    on_batch_end = on_train_batch_end

    def on_test_begin(self, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_test_begin(logs)

    def on_test_end(self, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_test_end(logs)

    def on_test_batch_begin(self, batch: int, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_test_batch_end(batch, logs)

    def on_predict_begin(self, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_predict_begin(logs)

    def on_predict_end(self, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_predict_end(logs)

    def on_predict_batch_begin(self, batch: int, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_predict_batch_begin(batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        logs = _dict(logs)
        for cb in self.callbacks:
            cb.on_predict_batch_end(batch, logs)
