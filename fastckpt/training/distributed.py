"""Data parallelism inside the training loop: what the Trainer does differently under a strategy
with several replicas (``fastckpt.distribute``).

Every replica draws the same global batches (same shuffle seed, broadcast from rank 0), takes its
rows of each (an even split: rows ``[lo + r*m//N, lo + (r+1)*m//N)`` of an ``m``-row batch), and
scales its loss gradient by ``1/m`` (the global batch), so the sum of the replicas' gradients (an MPI
allreduce) is exactly the one-process gradient up to the order of the floating-point sums. Random
layers draw their masks by global row, so results do not depend on N. Running totals (loss, metric
counts) are summed over the replicas when logs are read.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["DataParallel", "random_rows"]


class DataParallel:
    """The loop's view of a strategy with ``N > 1`` replicas (``for_model`` returns None otherwise)."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.rank = strategy.rank
        self.n = strategy.num_replicas_in_sync

    @classmethod
    def for_model(cls, model) -> Optional["DataParallel"]:
        strategy = getattr(model, "_distribute_strategy", None)
        if strategy is None or strategy.num_replicas_in_sync <= 1:
            return None
        return cls(strategy)

    # --- start of fit: the same model everywhere ------------------------------------------------
    def sync_model(self, model) -> None:
        """Checks that every replica built the same model (names, shapes, dtypes of every weight
        and optimizer variable) — a typed error naming the first difference, on every replica —
        then copies rank 0's values and shuffle state to all."""
        variables = list(model.weights)
        if model.optimizer is not None:
            variables += [v for v in model.optimizer.variables if all(v is not w for w in variables)]
        mine = [(v.path, tuple(v.shape), str(v.dtype)) for v in variables]
        everyone = self.strategy.allgather(mine)
        for r, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                raise ValueError(f"Replicas built different models: {_first_difference(everyone[0], theirs, r)}."
                                 f" Every process must run the same script (same layers, names and "
                                 f"shapes) inside strategy.scope().")
        self.strategy.broadcast_([v.value for v in variables])
        seed, drawn = self.strategy.bcast((model._shuffle_seed, model._shuffle_epochs_drawn))
        model._shuffle_seed, model._shuffle_epochs_drawn = seed, drawn
        for layer in model.layers:
            if hasattr(layer, "rng_offset"):
                layer.rng_seed, layer.rng_offset = self.strategy.bcast((layer.rng_seed, layer.rng_offset))

    # --- each step -----------------------------------------------------------------------------
    def local_rows(self, lo: int, hi: int) -> Tuple[int, int]:
        """This replica's rows ``[a, b)`` of the global batch ``[lo, hi)``."""
        m = hi - lo
        return lo + (self.rank * m) // self.n, lo + ((self.rank + 1) * m) // self.n

    def allreduce_gradients(self, grads: Sequence[np.ndarray]) -> None:
        self.strategy.allreduce_sum_(list(grads))

    # --- logs ------------------------------------------------------------------------------------
    def reduce_metrics(self, metrics: List) -> List[Tuple[float, float]]:
        """Every metric's ``(total, count)`` summed over the replicas (the caller puts them back
        after reading the logs). Metrics must keep their state as ``total``/``count``."""
        local = []
        for m in metrics:
            if not (hasattr(m, "total") and hasattr(m, "count")):
                raise NotImplementedError(
                    f"Metric {m.name!r} ({type(m).__name__}) keeps state other than a total and a "
                    f"count; it cannot be summed over replicas yet")
            local.append((float(m.total), float(m.count)))
        arr = np.asarray(local, np.float64).reshape(-1)
        self.strategy.allreduce_sum_([arr])
        return [tuple(p) for p in arr.reshape(-1, 2)]

    def gather_rows(self, part: np.ndarray) -> np.ndarray:
        """The full result of a row-sharded computation, on every replica."""
        return np.concatenate(self.strategy.allgather(part), axis=0)


def _first_difference(ref, theirs, rank) -> str:
    for i, (a, b) in enumerate(zip(ref, theirs)):
        if a != b:
            return f"variable {i} is {a[0]} {a[1]} {a[2]} on rank 0 but {b[0]} {b[1]} {b[2]} on rank {rank}"
    return f"rank 0 has {len(ref)} variables, rank {rank} has {len(theirs)}"


@contextmanager
def random_rows(layers, start: int, total: int) -> Iterator[None]:
    """During one replica's share of a global batch: random layers draw the masks of global rows
    ``start, start + 1, ...`` and then advance their counters past all ``total`` rows, so the
    masks (and the run) do not depend on the number of replicas."""
    random_layers = [layer for layer in layers if hasattr(layer, "rng_offset")]
    for layer in random_layers:
        layer._global_rows = (start, total)
    try:
        yield
    finally:
        for layer in random_layers:
            layer._global_rows = None
