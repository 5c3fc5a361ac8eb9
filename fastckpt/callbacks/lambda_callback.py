"""``LambdaCallback``: a callback built from plain functions."""

from __future__ import annotations

from typing import Callable, Optional

from fastckpt.callbacks.callback import Callback

__all__ = ["LambdaCallback"]

# Every hook a function may be given for; each is called with the same positional arguments as the method
# it replaces: (epoch, logs), (batch, logs) or (logs).
_HOOKS = tuple(name for name in vars(Callback) if name.startswith("on_"))


class LambdaCallback(Callback):
    """Calls the functions it is given at the matching hooks.

    Args:
        on_epoch_begin, on_epoch_end: ``f(epoch, logs)``.
        on_batch_begin, on_batch_end: ``f(batch, logs)`` (Keras 2 names for the train-batch hooks).
        on_train_begin, on_train_end: ``f(logs)``.
        **hooks: any other hook by name, e.g. ``on_test_end=f`` or ``on_predict_batch_end=f``.

    Only functions given for batch hooks make the training loop return to Python per batch.

    Example:
        >>> seen = []
        >>> cb = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(round(logs["loss"], 2)))
        >>> cb.on_epoch_end(0, {"loss": 0.4266})
        >>> seen, cb.implements_batch_hooks("train")
        ([0.43], False)
    """

    def __init__(
        self,
        on_epoch_begin: Optional[Callable] = None,
        on_epoch_end: Optional[Callable] = None,
        on_batch_begin: Optional[Callable] = None,
        on_batch_end: Optional[Callable] = None,
        on_train_begin: Optional[Callable] = None,
        on_train_end: Optional[Callable] = None,
        **hooks: Callable,
    ) -> None:
        super().__init__()
        unknown = sorted(set(hooks) - set(_HOOKS))
        if unknown:
            raise TypeError(f"Expected hook names among {list(_HOOKS)}, got unknown argument(s) {unknown}")
        hooks.update(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end, on_batch_begin=on_batch_begin,
                     on_batch_end=on_batch_end, on_train_begin=on_train_begin, on_train_end=on_train_end)
        for name, fn in hooks.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"Expected {name} to be callable or None, got {type(fn).__name__}")
            # An instance attribute shadows the method, which is also how implements_batch_hooks sees it.
            setattr(self, name, fn)
