"""``keras.utils.Sequence`` and ``keras.utils.PyDataset``: batches by index, for ``fit``,
``evaluate`` and ``predict``.

A subclass implements ``__len__`` (batches per epoch) and ``__getitem__(index)`` returning one
batch: ``x``, ``(x, y)`` or ``(x, y, sample_weight)``. ``fit`` calls ``on_epoch_end`` after each
epoch (and ``PyDataset.on_epoch_begin`` before it). Batches are fetched in this process: the
``workers``/``use_multiprocessing``/``max_queue_size`` arguments are accepted and recorded only.
"""

from __future__ import annotations

__all__ = ["Sequence", "PyDataset"]


class Sequence:
    """Base class of an indexable source of batches (``tf.keras.utils.Sequence``).

    Example:
        >>> import numpy as np
        >>> class Halves(Sequence):
        ...     def __len__(self):
        ...         return 2
        ...     def __getitem__(self, i):
        ...         return np.full((3, 4), i, np.float32), np.zeros(3, np.int32)
        >>> len(Halves()), Halves()[1][0].shape
        (2, (3, 4))
    """

    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def on_epoch_end(self) -> None:
        """Called by ``fit`` after every epoch (e.g. to reshuffle)."""

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


class PyDataset(Sequence):
    """Keras 3's name for ``Sequence``, with ``num_batches`` and ``on_epoch_begin``.

    ``num_batches`` defaults to ``len(self)``; a subclass may define either.
    """

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False,
                 max_queue_size: int = 10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    @property
    def workers(self) -> int:
        return getattr(self, "_workers", 1)

    @property
    def use_multiprocessing(self) -> bool:
        return getattr(self, "_use_multiprocessing", False)

    @property
    def max_queue_size(self) -> int:
        return getattr(self, "_max_queue_size", 10)

    @property
    def num_batches(self):
        if type(self).__len__ is PyDataset.__len__:
            return None
        return len(self)

    def __len__(self) -> int:
        n = self.num_batches  # a subclass that defines num_batches instead of __len__
        if n is None:
            raise TypeError(f"{type(self).__name__}: define __len__ or num_batches")
        return int(n)

    def on_epoch_begin(self) -> None:
        """Called by ``fit`` before every epoch."""
