"""One writer per directory, and the temp files only a writer makes.

Every save fastckpt makes (tensor bundles, the ``checkpoint`` state file, model directories, ``.h5``
and ``.keras`` files) runs under :func:`writer_lock` on the directory that will hold its target:
an exclusive ``flock`` on the directory itself (no lock file is left behind), taken by every
process and re-entrant within one thread. A second process saving into the same directory waits
until the first has committed, so concurrent saves end as one whole save, never a mix.

Temps are named ``<final>.tmp-<16 hex digits>``, the same rule the native commit uses. A temp can
only be written by a writer that holds the directory's lock, so a writer that holds it knows every
temp of its target that it did not create itself is dead (left by a killed or failed save) and
removes it with :func:`sweep_temps` before it writes: killed saves leave nothing the next save of
the same target does not clean.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, Tuple, Union

__all__ = ["writer_lock", "temp_path", "is_temp_of", "sweep_temps", "atomic_file",
           "fsync_dir", "test_hook", "TEMP_INFIX"]

TEMP_INFIX = ".tmp-"
_TOKEN = re.compile(r"[0-9a-f]{16}")


def temp_path(final: str) -> str:
    """A fresh temp name for ``final``: ``<final>.tmp-<token>``."""
    return final + TEMP_INFIX + secrets.token_hex(8)


def is_temp_of(name: str, base: str) -> bool:
    """Whether directory entry ``name`` is a temp of the final named ``base`` (same directory)."""
    if not name.startswith(base + TEMP_INFIX):
        return False
    return _TOKEN.fullmatch(name[len(base) + len(TEMP_INFIX):]) is not None


class _Held:
    __slots__ = ("mutex", "owner", "depth", "fd")

    def __init__(self) -> None:
        self.mutex = threading.Lock()   # held while any thread of this process owns the directory
        self.owner = None
        self.depth = 0
        self.fd = -1


_table_mutex = threading.Lock()
_table: Dict[Tuple[int, int], _Held] = {}


def _after_fork_in_child() -> None:
    """A forked child owns none of its parent's locks: drop them (closing our copy of a descriptor
    does not release the parent's flock, which lasts while the parent's copy is open)."""
    global _table_mutex
    for held in _table.values():
        if held.fd >= 0:
            try:
                os.close(held.fd)
            except OSError:
                pass
    _table.clear()
    _table_mutex = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _directory_of(target: str) -> str:
    return os.path.dirname(os.path.abspath(target)) or "/"


@contextmanager
def writer_lock(target: Union[str, os.PathLike]) -> Iterator[str]:
    """Hold the writer lock of the directory that contains ``target``; yields that directory.

    Creates the directory if needed. Blocks while another process (or another thread of this one)
    holds it; nested use on one thread does not block.
    """
    directory = _directory_of(os.fspath(target))
    os.makedirs(directory, exist_ok=True)
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", directory)
    key = (st.st_dev, st.st_ino)
    with _table_mutex:
        held = _table.setdefault(key, _Held())
    me = (os.getpid(), threading.get_ident())
    if held.owner == me:
        held.depth += 1
        try:
            yield directory
        finally:
            held.depth -= 1
        return
    held.mutex.acquire()
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        held.owner, held.depth, held.fd = me, 1, fd
        try:
            yield directory
        finally:
            held.owner, held.depth, held.fd = None, 0, -1
            os.close(fd)  # releases the flock
    finally:
        held.mutex.release()


def sweep_temps(final: Union[str, os.PathLike]) -> int:
    """Remove every temp of ``final`` (files or directories); returns how many. Call it only while
    holding :func:`writer_lock` for ``final``: then no live writer owns any of them."""
    final = os.path.abspath(os.fspath(final))
    directory, base = os.path.split(final)
    removed = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        if not is_temp_of(name, base):
            continue
        path = os.path.join(directory, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def test_hook(name: str) -> None:
    """Crash and pause points of the Python commits, for crash and soak tests; the native commit
    has the same two (``csrc/io/commit.h``, where the contract is written out).

    ``FASTCKPT_TEST_CRASH_AT=<name>``: ``_exit(86)`` here, as abruptly as SIGKILL.
    ``FASTCKPT_TEST_FAIL_AT=<name>``: raise ``OSError(EIO)`` here, as a failing disk would.
    ``FASTCKPT_TEST_PAUSE_AT=<name>``: write the line ``FASTCKPT_PAUSED <name>`` (appended to the
    file ``FASTCKPT_TEST_PAUSE_FILE`` when set, else to stderr) in one write, then sleep until
    killed, for at most ``FASTCKPT_TEST_PAUSE_SECONDS`` (default 60) or until that file is removed.
    """
    env = os.environ
    if env.get("FASTCKPT_TEST_CRASH_AT") == name:
        os._exit(86)
    if env.get("FASTCKPT_TEST_FAIL_AT") == name:
        raise OSError(errno.EIO, f"injected failure at {name} (FASTCKPT_TEST_FAIL_AT)")
    if env.get("FASTCKPT_TEST_PAUSE_AT") != name:
        return
    line = f"FASTCKPT_PAUSED {name}\n".encode()
    file = env.get("FASTCKPT_TEST_PAUSE_FILE")
    if file:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    else:
        os.write(2, line)
    try:
        limit = float(env.get("FASTCKPT_TEST_PAUSE_SECONDS") or 60.0)
    except ValueError:
        limit = 60.0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and (not file or os.path.exists(file)):
        time.sleep(0.001)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(final: Union[str, os.PathLike], fsync: bool = True) -> Iterator[str]:
    """``with atomic_file('m.h5') as tmp:`` — write the file at ``tmp``; on success it replaces
    ``final`` in one rename (fsynced first when ``fsync``), on any error (or a failure while the
    temp is being created) ``final`` is untouched and the temp is gone. Holds the writer lock and
    sweeps dead temps of ``final`` first. A directory in the way is refused before anything is
    written. Test hooks (:func:`test_hook`): ``file-written`` (temp complete and durable, ``final``
    untouched) and ``file-replaced`` (renamed into place, directory not yet fsynced)."""
    final = os.path.abspath(os.fspath(final))
    with writer_lock(final) as directory:
        if os.path.isdir(final):
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way of the file to save",
                                    final)
        sweep_temps(final)
        tmp = temp_path(final)
        try:
            yield tmp
            if fsync:
                fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            test_hook("file-written")
            os.replace(tmp, final)
            test_hook("file-replaced")
            if fsync:
                fsync_dir(directory)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                shutil.rmtree(tmp, ignore_errors=True)
