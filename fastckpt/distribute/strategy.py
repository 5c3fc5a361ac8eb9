"""Strategies: who the replicas are, and the collectives between them.

A ``Strategy`` answers three questions for the rest of fastckpt: how many replicas train together
(``num_replicas_in_sync``), which one this process is (``cluster_resolver.task_id``), and how to
combine their values (``allreduce_sum_``, ``broadcast_``, ``gather``, ``bcast``). The default
strategy has one replica and does nothing; ``MultiWorkerMirroredStrategy`` runs one replica per MPI
process through ``mpi4py``.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Sequence

import numpy as np

from fastckpt import backend

__all__ = ["Strategy", "MultiWorkerMirroredStrategy", "get_strategy", "has_strategy",
           "launched_under_mpi", "replicated_strategy"]

# Environment variables that MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's PMI) set in every
# process they start. Without one, the process is alone and MPI is not initialised at all.
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                  "HYDI_CONTROL_FD")


def launched_under_mpi() -> bool:
    return any(v in os.environ for v in _LAUNCHER_VARS)


class ClusterResolver:
    """``strategy.cluster_resolver``: this process's place in the job."""

    def __init__(self, task_id: int, num_workers: int):
        self.task_type = "worker"
        self.task_id = int(task_id)
        self.num_workers = int(num_workers)

    def __repr__(self) -> str:
        return f"<ClusterResolver task {self.task_id} of {self.num_workers}>"


class Strategy:
    """One replica in this process: the strategy in force outside any ``scope()``."""

    def __init__(self):
        self.cluster_resolver = ClusterResolver(0, 1)

    @property
    def num_replicas_in_sync(self) -> int:
        return self.cluster_resolver.num_workers

    @property
    def rank(self) -> int:
        return self.cluster_resolver.task_id

    @property
    def is_chief(self) -> bool:
        """Rank 0 prints progress and writes the side files (CSV logs, TensorBoard)."""
        return self.rank == 0

    @contextmanager
    def scope(self) -> Iterator["Strategy"]:
        """Models (and their optimizers) created inside train with this strategy."""
        stack = _state.__dict__.setdefault("stack", [])
        stack.append(self)
        try:
            yield self
        finally:
            stack.pop()

    # --- collectives (identity with one replica) ---------------------------------------------
    def allreduce_sum_(self, arrays: Sequence[np.ndarray]) -> None:
        """Sums each array over the replicas, in place."""

    def start_allreduce_sum_(self, array: np.ndarray) -> Any:
        """Starts summing ``array`` over the replicas in place, without waiting: returns a
        handle for ``wait_all``. Every replica must start the same sums in the same order."""
        return None

    def test_all(self, handles: List[Any]) -> bool:
        """Lets started sums progress; True when all are done (does not wait)."""
        return True

    def wait_all(self, handles: List[Any]) -> None:
        """Returns when every started sum of ``handles`` is complete."""

    def broadcast_(self, arrays: Sequence[np.ndarray], root: int = 0) -> None:
        """Overwrites each array with the root replica's, in place."""

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def gather(self, obj: Any, root: int = 0) -> Optional[List[Any]]:
        return [obj]

    def allgather(self, obj: Any) -> List[Any]:
        return [obj]

    def barrier(self) -> None:
        """Returns when every replica has called it."""

    def run_on_chief(self, fn) -> None:
        """Runs ``fn()`` on rank 0 only (side files, whole-model saves) while the others wait;
        its exception is raised on every replica (the others get an ``OSError`` naming it)."""
        error = None
        if self.rank == 0:
            try:
                fn()
            except Exception as e:  # re-raised below, after the others have heard of it
                error = e
        text = self.bcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if text is not None:
            raise OSError(f"rank 0 failed: {text}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} replica {self.rank} of {self.num_replicas_in_sync}>"


class MultiWorkerMirroredStrategy(Strategy):
    """Synchronous data parallelism over MPI: one replica per process, the same model on each.

    In ``fit``, ``batch_size`` is the global batch: every process takes its share of the rows of
    each global batch, gradients are summed over the processes (MPI allreduce) and every process
    applies the same update. Checkpoints are written one data shard per process, committed by
    rank 0 once all shards are durable.

    Without an MPI launcher (``python train.py``) it is a one-replica strategy and never imports
    MPI. Under ``mpiexec``/``srun`` it needs ``mpi4py`` (``pip install "fastckpt[mpi]"``).
    """

    def __init__(self, cluster_resolver=None, communication_options=None):
        super().__init__()
        self.communication_options = communication_options  # its bytes_per_pack sizes the buckets
        self._comm = None
        self._mpi = None
        if launched_under_mpi():
            try:
                from mpi4py import MPI
            except ImportError as e:  # pragma: no cover - depends on the install
                raise ImportError("MultiWorkerMirroredStrategy: this process was started by an MPI "
                                  "launcher but mpi4py is not installed; pip install "
                                  "\"fastckpt[mpi]\"") from e
            if backend.models_created() and MPI.COMM_WORLD.Get_size() > 1:
                raise RuntimeError(
                    f"MultiWorkerMirroredStrategy must be created before any model: "
                    f"{backend.models_created()} model(s) exist already in this process. Create "
                    f"the strategy first, then build and compile models inside strategy.scope().")
            self._mpi = MPI
            self._comm = MPI.COMM_WORLD
            # A failed collective must end the job, not hang it.
            self._comm.Set_errhandler(MPI.ERRORS_ARE_FATAL)
            self.cluster_resolver = ClusterResolver(self._comm.Get_rank(), self._comm.Get_size())

    def allreduce_sum_(self, arrays: Sequence[np.ndarray]) -> None:
        if self._comm is None or self.num_replicas_in_sync == 1:
            return
        for a in arrays:
            _check_buffer(a, "allreduce_sum_")
            self._comm.Allreduce(self._mpi.IN_PLACE, a, op=self._mpi.SUM)

    def start_allreduce_sum_(self, array: np.ndarray) -> Any:
        if self._comm is None or self.num_replicas_in_sync == 1:
            return None
        _check_buffer(array, "start_allreduce_sum_")
        return self._comm.Iallreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM)

    def test_all(self, handles: List[Any]) -> bool:
        live = [h for h in handles if h is not None]
        return True if not live else bool(self._mpi.Request.Testall(live))

    def wait_all(self, handles: List[Any]) -> None:
        live = [h for h in handles if h is not None]
        if live:
            self._mpi.Request.Waitall(live)

    def broadcast_(self, arrays: Sequence[np.ndarray], root: int = 0) -> None:
        if self._comm is None or self.num_replicas_in_sync == 1:
            return
        for a in arrays:
            _check_buffer(a, "broadcast_")
            self._comm.Bcast(a, root=root)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj if self._comm is None else self._comm.bcast(obj, root=root)

    def gather(self, obj: Any, root: int = 0) -> Optional[List[Any]]:
        return [obj] if self._comm is None else self._comm.gather(obj, root=root)

    def allgather(self, obj: Any) -> List[Any]:
        return [obj] if self._comm is None else self._comm.allgather(obj)

    def barrier(self) -> None:
        if self._comm is not None:
            self._comm.Barrier()


def _check_buffer(a: np.ndarray, what: str) -> None:
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or not a.flags.writeable:
        raise TypeError(f"{what}: expected writeable C-contiguous NumPy arrays, got "
                        f"{type(a).__name__}")


_state = threading.local()
_DEFAULT = Strategy()


def get_strategy() -> Strategy:
    """The strategy of the innermost ``scope()`` (the one-replica default outside any)."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else _DEFAULT


def replicated_strategy(*objects) -> Optional[Strategy]:
    """The strategy with several replicas that one of ``objects`` (models, or a checkpoint's
    objects) was created under, or None: saves then run collectively."""
    for obj in objects:
        s = getattr(obj, "_distribute_strategy", None)
        if s is not None and s.num_replicas_in_sync > 1:
            return s
    return None


def has_strategy() -> bool:
    return bool(getattr(_state, "stack", None))
