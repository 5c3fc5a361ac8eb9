"""Commit a directory as a whole: build it beside the target, then swap it in atomically.

On Linux the swap is ``renameat2(RENAME_EXCHANGE)``: readers see the old directory or the new
one, never neither. Where that call is missing (other systems, old kernels) we fall back to two
renames and leave the old copy at ``<target>.old-<pid>`` until the new one is in place, which
``recover`` puts back if a crash came between the two.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator, Optional

__all__ = ["atomic_directory", "recover"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc: Optional[ctypes.CDLL] = None


def _renameat2():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(_libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _exchange(a: str, b: str) -> bool:
    fn = _renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem cannot exchange
        return False
    raise OSError(err, os.strerror(err), b)


def recover(target: str) -> None:
    """Undo a fallback commit that stopped between its two renames."""
    target = os.path.abspath(target)
    if os.path.exists(target):
        return
    parent, base = os.path.split(target)
    olds = sorted(n for n in os.listdir(parent or ".") if n.startswith(base + ".old-"))
    if olds:
        os.rename(os.path.join(parent, olds[-1]), target)


@contextmanager
def atomic_directory(target: str, overwrite: bool = True, fsync: bool = True) -> Iterator[str]:
    """``with atomic_directory('saved_model/m') as tmp:`` — fill ``tmp``; on success it becomes
    ``target`` in one step; on error ``target`` is untouched and ``tmp`` is removed."""
    target = os.path.abspath(os.fspath(target))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    recover(target)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists and overwrite=False")
    if os.path.exists(target) and not os.path.isdir(target):
        raise FileExistsError(f"{target} exists and is not a directory")
    tmp = tempfile.mkdtemp(prefix=os.path.basename(target) + ".tmp-", dir=parent)
    try:
        yield tmp
        if fsync:
            _fsync_tree(tmp)
        if not os.path.exists(target):
            os.rename(tmp, target)
        elif _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
        else:
            old = f"{target}.old-{os.getpid()}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        if fsync:
            _fsync_dir(parent)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
