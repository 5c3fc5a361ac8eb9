"""Commit a directory as a whole: build it beside the target, then swap it in atomically.

The whole commit runs under the writer lock of the directory that holds the target
(:func:`fastckpt.checkpoint.locking.writer_lock`), so two processes saving one model directory
take turns and the result is always one whole save. The new directory is built at
``<target>.tmp-<16 hex>`` (the temp rule of :mod:`fastckpt.checkpoint.locking`); a writer that holds
the lock removes every such temp it finds first: they were left by killed saves.

On Linux the swap is ``renameat2(RENAME_EXCHANGE)``: readers see the old directory or the new
one, never neither, and a directory is never modified once it has been committed (the old one is
swapped out under a temp name and deleted whole). Where that call is missing (other systems, old
kernels, some file systems) we fall back to two renames and leave the old copy at
``<target>.old-<pid>`` until the new one is in place; :func:`recover` puts it back if a crash came
between the two renames, and readers load it while the target is missing
(:func:`previous_generation`).

Test hooks (for crash tests): ``FASTCKPT_TEST_CRASH_AT=dir-<step>`` makes the process ``_exit(86)``
at ``step``, ``FASTCKPT_TEST_PAUSE_AT=dir-<step>`` makes it write ``FASTCKPT_PAUSED dir-<step>`` on
stderr and sleep until it is killed (:func:`fastckpt.checkpoint.locking.test_hook`). Steps: ``built`` (temp complete and durable, nothing committed),
``moved-aside`` (fallback only: the old copy renamed away, the new one not yet in place),
``exchanged`` (new directory committed, the old one not yet deleted).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
from contextlib import contextmanager
from typing import Iterator, List, Optional

from fastckpt.checkpoint import locking

__all__ = ["atomic_directory", "recover", "previous_generation", "OLD_INFIX"]

OLD_INFIX = ".old-"
_OLD_SUFFIX = re.compile(r"[0-9]+")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc: Optional[ctypes.CDLL] = None


def _test_hook(step: str) -> None:
    locking.test_hook("dir-" + step)


def _renameat2():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(_libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def _fsync_tree(root: str) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        locking.fsync_dir(dirpath)


def _exchange(a: str, b: str) -> bool:
    fn = _renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), b)


def _olds(target: str) -> List[str]:
    """Paths of the fallback commit's old copies of ``target`` (``<target>.old-<pid>``)."""
    parent, base = os.path.split(target)
    try:
        names = os.listdir(parent or ".")
    except (OSError, ValueError):  # no such directory, or a name the OS cannot take (NUL)
        return []
    prefix = base + OLD_INFIX
    return [os.path.join(parent, n) for n in names
            if n.startswith(prefix) and _OLD_SUFFIX.fullmatch(n[len(prefix):])]


def previous_generation(target: str) -> Optional[str]:
    """While ``target`` is missing: the old copy a fallback commit moved aside (the newest, if a
    crash left several), i.e. the last committed generation; else None. Reads only."""
    target = os.path.abspath(os.fspath(target))
    if os.path.lexists(target):
        return None
    best, best_time = None, None
    for path in _olds(target):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        # The rename that moved it aside set its ctime; the newest one is the latest generation.
        if os.path.isdir(path) and not os.path.islink(path) and (
                best_time is None or st.st_ctime_ns > best_time):
            best, best_time = path, st.st_ctime_ns
    return best


def recover(target: str) -> None:
    """Undo a fallback commit that stopped between its two renames: put the old copy back.

    Call it while holding the writer lock of ``target``'s directory (``atomic_directory`` does)."""
    target = os.path.abspath(os.fspath(target))
    old = previous_generation(target)
    if old is not None:
        os.rename(old, target)


def _sweep(target: str) -> None:
    """Remove what killed saves of ``target`` left: its temps, and old copies once ``target`` is
    back in place. Only while holding the writer lock (then no other writer owns any of them)."""
    locking.sweep_temps(target)
    if os.path.isdir(target):
        for path in _olds(target):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def atomic_directory(target: str, overwrite: bool = True, fsync: bool = True) -> Iterator[str]:
    """``with atomic_directory('saved_model/m') as tmp:`` — fill ``tmp``; on success it becomes
    ``target`` in one step; on error ``target`` is untouched and ``tmp`` is removed."""
    target = os.path.abspath(os.fspath(target))
    with locking.writer_lock(target) as parent:
        recover(target)
        _sweep(target)
        if os.path.lexists(target) and not overwrite:
            raise FileExistsError(errno.EEXIST, "already exists and overwrite=False", target)
        if os.path.lexists(target) and (os.path.islink(target) or not os.path.isdir(target)):
            raise FileExistsError(errno.EEXIST, "exists and is not a directory", target)
        tmp = locking.temp_path(target)
        os.mkdir(tmp)
        try:
            yield tmp
            if fsync:
                _fsync_tree(tmp)
            _test_hook("built")
            if not os.path.exists(target):
                os.rename(tmp, target)
            elif _exchange(tmp, target):
                _test_hook("exchanged")
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
            else:
                old = f"{target}{OLD_INFIX}{os.getpid()}"
                os.rename(target, old)
                _test_hook("moved-aside")
                os.rename(tmp, target)
                _test_hook("exchanged")
                shutil.rmtree(old, ignore_errors=True)
            if fsync:
                locking.fsync_dir(parent)
        finally:
            if os.path.lexists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
