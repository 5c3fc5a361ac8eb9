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

import os
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from fastckpt.checks import unique_objects
from fastckpt.variables import aligned_empty

__all__ = ["DataParallel", "GradientBuckets", "random_rows"]


class DataParallel:
    """The loop's view of a strategy with ``N > 1`` replicas (``for_model`` returns None otherwise)."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.rank = strategy.rank
        self.n = strategy.num_replicas_in_sync
        self.bucket_bytes = bucket_bytes(strategy)
        self._buckets: Optional[GradientBuckets] = None

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

    def share(self, xs, ys, sws):
        """This replica's rows of one global batch given as arrays (a generator's or a
        Sequence's item): ``(start, rows of the global batch, xs, ys, sws)``."""
        m = int(xs[0].shape[0])
        a, b = self.local_rows(0, m)

        def cut(arrays):
            return None if arrays is None else [None if v is None else v[a:b] for v in arrays]

        return a, m, cut(xs), cut(ys), cut(sws)

    def begin_backward(self, model) -> "GradientBuckets":
        """Before the backward pass of a step: the model's gradients in one arena (placed on the
        first step, and again if the model's trainable weights change), no bucket sent yet. Pass
        ``buckets.layer_done`` to ``model._backward``."""
        pairs = model._grads_and_vars()
        b = self._buckets
        if b is None or not b.matches(pairs):
            b = self._buckets = GradientBuckets(model, self.strategy, self.bucket_bytes)
        b.begin()
        return b

    def allreduce_gradients(self, pairs: Sequence[tuple]) -> None:
        """Sums the gradients of ``pairs`` (the model's ``_grads_and_vars()``) over the
        replicas: sends the buckets the backward pass has not sent yet and waits for all."""
        b = self._buckets
        if b is None or not b.matches(pairs):
            raise RuntimeError("the model's gradient buffers changed between its backward pass "
                               "and the update")
        b.finish()

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


# Gradients are sent in buckets of at least this many bytes (whole layers, in backward order), unless
# the strategy's ``communication_options.bytes_per_pack`` or FASTCKPT_BUCKET_BYTES say otherwise.
DEFAULT_BUCKET_BYTES = 1 << 20
_ALIGN_ITEMS = 16  # every gradient starts on a 64-byte boundary of the arena, as aligned_empty's


def bucket_bytes(strategy) -> int:
    opts = getattr(strategy, "communication_options", None)
    pack = int(getattr(opts, "bytes_per_pack", 0) or 0)
    if pack > 0:
        return pack
    env = os.environ.get("FASTCKPT_BUCKET_BYTES")
    return int(env) if env else DEFAULT_BUCKET_BYTES


def _poke_default() -> bool:
    return os.environ.get("FASTCKPT_MPI_POKE", "1") != "0"


def _leaves(layer) -> list:
    """The layers that own weights under ``layer``: itself, or a nested model's layers."""
    if hasattr(layer, "_grads_and_vars") and hasattr(layer, "layers"):
        if not layer.trainable:
            return []
        return [leaf for sub in unique_objects(layer.layers) for leaf in _leaves(sub)]
    return [layer]


class GradientBuckets:
    """A model's float32 trainable gradients in one aligned arena, cut into a few buckets.

    Every layer's gradient buffers become views of the arena (``Layer._place_grad_buffers``),
    laid out in backward order (last layer first), so the backward pass fills the arena from the
    front. Buckets are runs of whole layers of at least ``bucket_bytes``. As soon as the backward
    pass reports (``layer_done``) that every layer of a bucket is complete, the bucket's in-place
    nonblocking allreduce starts, while the layers below are still being differentiated; buckets
    start in arena order on every replica, as MPI requires of collectives. ``finish`` starts the
    rest and waits. Gradients of other dtypes (and a weight shared by two layers, after its
    first) stay outside the arena and are summed with blocking calls at the end.
    """

    def __init__(self, model, strategy, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 poke: Optional[bool] = None):
        self.strategy = strategy
        self.poke = _poke_default() if poke is None else poke
        tops = unique_objects(model.layers) if model.trainable else []
        order, owners = [], {}
        for top in reversed(tops):
            for leaf in reversed(_leaves(top)):
                owners.setdefault(id(leaf), set()).add(id(top))
                order.append(leaf)
        order = unique_objects(order)
        # Layout: offsets of each leaf's float32 gradients, and bucket boundaries.
        seen_vars, plan, size = set(), [], 0
        cuts, bucket_start, bucket_leaves = [], 0, []
        for leaf in order:
            tw = leaf.trainable_weights
            if not tw:
                continue
            slots = []
            for w in tw:
                if id(w) in seen_vars or np.dtype(w.dtype) != np.float32:
                    slots.append(None)
                    continue
                seen_vars.add(id(w))
                size = -(-size // _ALIGN_ITEMS) * _ALIGN_ITEMS
                n = int(np.prod(w.shape, dtype=np.int64))
                slots.append((size, n))
                size += n
            if all(sl is None for sl in slots):
                continue
            plan.append((leaf, slots))
            bucket_leaves.append(leaf)
            if (size - bucket_start) * 4 >= bucket_bytes:
                cuts.append((bucket_start, size, bucket_leaves))
                bucket_start, bucket_leaves = -(-size // _ALIGN_ITEMS) * _ALIGN_ITEMS, []
        if bucket_leaves:
            cuts.append((bucket_start, size, bucket_leaves))
        self.arena = aligned_empty((max(size, 1),), np.float32)
        self.arena.fill(0.0)  # the padding between gradients is summed too: keep it zero
        for leaf, slots in plan:
            current = leaf._grad_buffers()
            leaf._place_grad_buffers([
                cur if sl is None else self.arena[sl[0]:sl[0] + sl[1]].reshape(cur.shape)
                for cur, sl in zip(current, slots)])
        self.buckets = [self.arena[a:b] for a, b, _ in cuts]
        self._owners_of = [frozenset().union(*(owners[id(leaf)] for leaf in leaves))
                           for _, _, leaves in cuts]
        self._buckets_of: Dict[int, List[int]] = {}
        for i, who in enumerate(self._owners_of):
            for top in who:
                self._buckets_of.setdefault(top, []).append(i)
        pairs = model._grads_and_vars()
        self._ids = [id(g) for g, _ in pairs]
        lo, hi = self.arena.ctypes.data, self.arena.ctypes.data + self.arena.nbytes
        self.loose = [g for g, _ in pairs if not lo <= g.ctypes.data < hi]
        self.nbytes = sum(b.nbytes for b in self.buckets)
        self.stats = strategy.__dict__.setdefault("_gradient_stats", {})
        self.begin()

    def matches(self, pairs) -> bool:
        return len(pairs) == len(self._ids) and all(id(g) == i for (g, _), i in zip(pairs, self._ids))

    def begin(self) -> None:
        self._pending = [set(who) for who in self._owners_of]
        self._handles: List = []

    def _start_ready(self) -> None:
        while len(self._handles) < len(self.buckets) and not self._pending[len(self._handles)]:
            self._handles.append(self.strategy.start_allreduce_sum_(self.buckets[len(self._handles)]))

    def layer_done(self, layer) -> None:
        """Called by the backward pass when ``layer`` (one of the model's layers) has its
        gradients complete."""
        for i in self._buckets_of.get(id(layer), ()):
            self._pending[i].discard(id(layer))
        self._start_ready()
        if self.poke and self._handles:
            # MPICH moves a nonblocking collective on only inside MPI calls: nudge it between
            # layers so that it runs under the backward pass, not in the final wait.
            self.strategy.test_all(self._handles)

    def finish(self) -> None:
        t = time.perf_counter()
        for p in self._pending:
            p.clear()
        self._start_ready()
        self.strategy.wait_all(self._handles)
        if self.loose:
            self.strategy.allreduce_sum_(self.loose)
        st = self.stats
        st["wait_s"] = st.get("wait_s", 0.0) + time.perf_counter() - t
        st["steps"] = st.get("steps", 0) + 1
        st["buckets"] = len(self.buckets)
        self._handles = []


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
