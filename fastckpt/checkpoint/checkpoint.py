"""``Checkpoint``: ``tf.train.Checkpoint``'s object-based save and restore."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from fastckpt.distribute import replicated_strategy
from fastckpt.checkpoint import state as state_mod
from fastckpt.checkpoint.saver import LoadStatus, restore_trackable, save_trackable
from fastckpt.variables import Variable

__all__ = ["Checkpoint"]


class Checkpoint:
    """Groups objects (``model=``, ``optimizer=``, ...) into one checkpoint, keyed by their names.

    Example:
        >>> import tempfile, os
        >>> from fastckpt import keras
        >>> model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> ckpt = Checkpoint(model=model)
        >>> path = ckpt.save(os.path.join(tempfile.mkdtemp(), "ckpt"))
        >>> path.endswith("ckpt-1")
        True
    """

    def __init__(self, root=None, **kwargs):
        if root is not None:
            kwargs = {"root": root, **kwargs}
        for name, obj in kwargs.items():
            if not hasattr(obj, "_trackable_children") and not isinstance(obj, Variable):
                raise TypeError(f"Checkpoint: {name}={obj!r} is not a trackable object (a model, "
                                f"layer, optimizer or variable)")
        self._objects = dict(kwargs)
        self.save_counter = Variable(np.int64(0), name="save_counter", trainable=False)

    def __getattr__(self, name):
        objects = self.__dict__.get("_objects", {})
        if name in objects:
            return objects[name]
        raise AttributeError(name)

    def _trackable_children(self, for_restore: bool = False):
        return list(self._objects.items()) + [("save_counter", self.save_counter)]

    def write(self, file_prefix: str, options=None, fsync: bool = True, extra=None) -> str:
        """Write a checkpoint at exactly ``file_prefix`` (no numbering, no state file).
        ``extra`` maps ``_fastckpt/...`` keys to bytes committed with it."""
        file_prefix = os.fspath(file_prefix)
        save_trackable(self, file_prefix, fsync=fsync, extra=extra, strategy=self._strategy())
        return file_prefix

    def _strategy(self):
        """The strategy with several replicas one of the objects was created under (then every
        replica writes, one shard each), or None."""
        return replicated_strategy(*self._objects.values())

    def save(self, file_prefix: str, options=None, fsync: bool = True) -> str:
        """Write ``<file_prefix>-<save_counter>`` and record it in the directory's state file."""
        file_prefix = os.fspath(file_prefix)
        self.save_counter.assign(self.save_counter.value + 1)
        path = f"{file_prefix}-{int(self.save_counter.value)}"
        try:
            self.write(path, fsync=fsync)
        except BaseException:
            self.save_counter.assign(self.save_counter.value - 1)
            raise
        strategy = self._strategy()
        if strategy is None:
            state_mod.write_state(os.path.dirname(path) or ".", path, fsync=fsync)
        else:
            strategy.run_on_chief(lambda: state_mod.write_state(os.path.dirname(path) or ".", path,
                                                                fsync=fsync))
        return path

    def read(self, save_path: str, options=None) -> LoadStatus:
        return restore_trackable(self, os.fspath(save_path), strict=False)

    def restore(self, save_path: Optional[str], options=None) -> LoadStatus:
        """Restore from ``save_path`` (a prefix); ``None`` restores nothing, as TensorFlow does."""
        if save_path is None:
            return _InitializationOnlyStatus()
        return self.read(save_path)


class _InitializationOnlyStatus(LoadStatus):
    """``restore(None)``: nothing was restored, so every assertion fails, as in TensorFlow."""

    def __init__(self):
        super().__init__("<none>", [], [], [])

    def _nothing(self):
        raise AssertionError("No checkpoint specified (save_path=None); nothing is being restored.")

    def assert_consumed(self):
        self._nothing()

    def assert_existing_objects_matched(self):
        self._nothing()

    def assert_nontrivial_match(self):
        self._nothing()
