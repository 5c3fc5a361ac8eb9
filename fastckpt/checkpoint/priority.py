"""CPU share of a background checkpoint writer thread: its priority (Linux; a no-op elsewhere)
and, while it runs, one compute thread fewer for the kernels (``yield_compute_thread``).

``ModelCheckpoint``'s writer runs at ``SCHED_IDLE``: it gets a core only when no normal thread
wants it (the Python work between epochs, the compute threads' waits), instead of taking a core
from the training kernels. Whoever waits for the writer raises it back to normal first (when the
process may: lowering a thread to ``SCHED_IDLE`` needs no privilege, raising it again needs
``CAP_SYS_NICE`` or an ``RLIMIT_NICE`` that allows nice 0), so the wait is not stretched by it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Optional

from fastckpt import ops

__all__ = ["lower_current_thread", "restore_thread", "thread_policy", "yield_compute_thread"]


@contextlib.contextmanager
def yield_compute_thread() -> Iterator[None]:
    """While inside, fastckpt's kernels run on one thread fewer than configured (never fewer
    than one): a background job on this thread gets a core of its own instead of taking one from
    a team whose threads wait for each other at every barrier. Kernel results do not depend on
    the thread count, so training stays bit-identical. Nests (a count)."""
    ops._core.background_begin()
    try:
        yield
    finally:
        ops._core.background_end()


def lower_current_thread() -> Optional[int]:
    """Puts the calling thread at ``SCHED_IDLE``; its native thread id, or None where that is not
    possible (not Linux, refused)."""
    if not hasattr(os, "SCHED_IDLE"):
        return None
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        return None
    return tid


def restore_thread(tid: Optional[int]) -> bool:
    """Back to ``SCHED_OTHER`` for thread ``tid`` (from ``lower_current_thread``); False when the
    system refuses (no privilege) or the thread is gone."""
    if tid is None or not hasattr(os, "SCHED_OTHER"):
        return False
    try:
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        return False
    return True


def thread_policy(tid: int) -> Optional[int]:
    """The scheduling policy of thread ``tid`` (``os.SCHED_*``), None where unknown."""
    if not hasattr(os, "sched_getscheduler"):
        return None
    try:
        return os.sched_getscheduler(tid)
    except OSError:
        return None
