"""The base class every callback derives from: Keras' hook vocabulary, with no behaviour of its own."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

__all__ = ["Callback"]

Logs = Optional[Dict[str, Any]]

# The batch-level hooks of each kind. A callback that overrides none of a kind's hooks lets the training
# loop run that kind's batches inside C++ without returning to Python.
_BATCH_HOOKS = {
    "train": ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end"),
    "test": ("on_test_batch_begin", "on_test_batch_end"),
    "predict": ("on_predict_batch_begin", "on_predict_batch_end"),
}


class Callback:
    """Base class for objects that hook into ``fit``, ``evaluate`` and ``predict``.

    Subclass it and override the hooks you need. ``logs`` dicts use Keras' metric names (``loss``,
    ``accuracy`` or ``sparse_categorical_accuracy``, ``val_loss``, ...); batch-level logs hold the running
    means over the epoch so far. Set ``self.model.stop_training = True`` to stop ``fit`` after the current
    epoch.

    Attributes:
        model: the model being trained, set by ``set_model``.
        params: ``{'verbose': v, 'epochs': E, 'steps': S}``, set by ``set_params``.
        validation_data: kept for Keras compatibility; ``fit`` does not fill it (nor does tf.keras 2.x).

    Example:
        >>> class CountEpochs(Callback):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.seen = []
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         self.seen.append((epoch, logs["loss"]))
        >>> cb = CountEpochs()
        >>> cb.on_epoch_end(0, {"loss": 0.5})
        >>> cb.seen
        [(0, 0.5)]
        >>> cb.implements_batch_hooks("train")  # epoch-level only: the loop may stay in C++
        False
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.params: Dict[str, Any] = {}
        self.validation_data: Any = None

    def set_params(self, params: Dict[str, Any]) -> None:
        self.params = params

    def set_model(self, model: Any) -> None:
        self.model = model

    # -- which hooks this callback listens to ------------------------------------------------------------

    def implements_batch_hooks(self, kind: str) -> bool:
        """Whether this callback overrides a batch-level hook of ``kind`` ('train', 'test' or 'predict').

        Checked by comparing each bound method's function with ``Callback``'s, so it also sees hooks
        assigned on the instance (as ``LambdaCallback`` does). Subclasses whose need depends on their
        settings (``ProgbarLogger``) override this.
        """
        try:
            names = _BATCH_HOOKS[kind]
        except KeyError:
            raise ValueError(f"Expected kind to be one of {sorted(_BATCH_HOOKS)}, got {kind!r}") from None
        for name in names:
            impl = getattr(self, name)
            if getattr(impl, "__func__", impl) is not getattr(Callback, name):
                return True
        return False

    # -- what the training loop and BackupAndRestore ask of every callback ------------------------------

    def get_training_state(self) -> Optional[Dict[str, Any]]:
        """JSON-able state that ``BackupAndRestore`` saves with every backup, so that a resumed
        ``fit`` continues as the interrupted one would have (``EarlyStopping``'s patience count,
        ``ModelCheckpoint``'s best value). ``None`` (the default): nothing to keep."""
        return None

    def set_training_state(self, state: Dict[str, Any]) -> None:
        """Take back what ``get_training_state`` returned; called when ``fit`` resumes from a
        backup, at the start of the first resumed epoch (after every ``on_train_begin``)."""

    def set_peer_callbacks(self, callbacks: List["Callback"]) -> None:
        """Called by ``fit`` before ``on_train_begin`` with all the callbacks of this run (this one
        included), for a callback that acts on the others (``BackupAndRestore`` keeps their state)."""

    def resume_epoch(self) -> Optional[int]:
        """Asked by ``fit`` after ``on_train_begin``: the epoch to start from because this callback
        restored a later state (``BackupAndRestore``), or ``None`` (the default)."""
        return None

    def on_checkpoint_committed(self, epoch: int, logs: Logs = None) -> None:
        """Called by ``fit`` after every callback's ``on_epoch_end`` for ``epoch``: the epoch's
        checkpoints are written and every callback's state is up to date, so a backup taken here
        holds all of it."""

    # -- Keras 2 aliases: the train-batch hooks forward to these, so overriding either works ---------------

    def on_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Alias of ``on_train_batch_begin`` kept from Keras 2."""

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Alias of ``on_train_batch_end`` kept from Keras 2."""

    # -- fit ---------------------------------------------------------------------------------------------

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        """Called at the start of epoch ``epoch`` (0-based) during ``fit``."""

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        """Called at the end of an epoch; ``logs`` holds the epoch's metrics and ``val_*`` results."""

    def on_train_begin(self, logs: Logs = None) -> None:
        """Called once when ``fit`` starts."""

    def on_train_end(self, logs: Logs = None) -> None:
        """Called once when ``fit`` ends; ``logs`` holds the last epoch's results."""

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called before training batch ``batch`` (0-based within the epoch)."""
        self.on_batch_begin(batch, logs)  # positional: LambdaCallback functions may name it anything

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called after training batch ``batch``; ``logs`` holds the running means of the epoch so far."""
        self.on_batch_end(batch, logs)

    # -- evaluate (and validation inside fit) ------------------------------------------------------------

    def on_test_begin(self, logs: Logs = None) -> None:
        """Called when ``evaluate`` (or a validation pass in ``fit``) starts."""

    def on_test_end(self, logs: Logs = None) -> None:
        """Called when ``evaluate`` (or a validation pass) ends; ``logs`` holds its results."""

    def on_test_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called before evaluation batch ``batch``."""

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called after evaluation batch ``batch`` with the running means so far."""

    # -- predict -----------------------------------------------------------------------------------------

    def on_predict_begin(self, logs: Logs = None) -> None:
        """Called when ``predict`` starts."""

    def on_predict_end(self, logs: Logs = None) -> None:
        """Called when ``predict`` ends."""

    def on_predict_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Called before prediction batch ``batch``."""

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Called after prediction batch ``batch``; ``logs`` may hold ``{'outputs': ...}``."""
