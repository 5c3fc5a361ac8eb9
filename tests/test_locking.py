"""fastckpt.checkpoint.locking: one writer per directory (across processes and threads, re-entrant
on one thread), atomic single-file saves that never leave a temp, and the sweep of dead temps."""

import errno
import fcntl
import multiprocessing
import os
import threading
import time

import pytest

from fastckpt.checkpoint import locking

HEX16 = "0123456789abcdef"


def _probe_locked(directory) -> bool:
    """Whether some other open file description holds the directory's flock (non-blocking)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's own lock, if it got one
    return False


def _child_takes_lock(target, log, trying, acquired):
    trying.set()
    with locking.writer_lock(target):
        acquired.set()
        with open(log, "a") as f:
            f.write("child\n")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_another_process_waits_while_the_lock_is_held(tmp_path, method):
    ctx = multiprocessing.get_context(method)
    target = str(tmp_path / "d" / "cp.ckpt")
    log = str(tmp_path / "log")
    trying, acquired = ctx.Event(), ctx.Event()
    with locking.writer_lock(target) as directory:
        assert directory == str(tmp_path / "d")
        assert _probe_locked(directory)
        # With fork, the child starts with a copy of this process's lock state: it must not
        # think it owns the lock (nor inherit a held mutex and hang forever).
        child = ctx.Process(target=_child_takes_lock, args=(target, log, trying, acquired),
                            daemon=True)
        child.start()
        assert trying.wait(60)
        time.sleep(0.3)  # ample time for the child to (wrongly) get the lock
        assert not acquired.is_set(), "a second process got the writer lock while it was held"
        with open(log, "a") as f:
            f.write("parent\n")
    if not acquired.wait(30):
        child.kill()
        pytest.fail("the child never got the lock after it was released")
    child.join(30)
    assert child.exitcode == 0
    with open(log) as f:
        assert f.read().split() == ["parent", "child"]
    assert not _probe_locked(str(tmp_path / "d"))


def _in_thread(body, timeout=30):
    """Run ``body`` on a thread so that a deadlock fails the test instead of hanging it."""
    errors = []

    def run():
        try:
            body()
        except BaseException as e:  # noqa: B902 - reported below
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "deadlocked"
    if errors:
        raise errors[0]


def test_reentrant_on_one_thread_and_released_at_the_outer_exit(tmp_path):
    target = str(tmp_path / "f")
    d = str(tmp_path)

    def body():
        with locking.writer_lock(target):
            with locking.writer_lock(str(tmp_path / "other")):  # same directory: same lock
                assert _probe_locked(d)
            assert _probe_locked(d)  # the inner exit did not release it
            with pytest.raises(RuntimeError):
                with locking.writer_lock(target):
                    raise RuntimeError("boom")
            assert _probe_locked(d)
        assert not _probe_locked(d)

    _in_thread(body)


def test_released_when_the_body_raises(tmp_path):
    with pytest.raises(KeyError):
        with locking.writer_lock(str(tmp_path / "f")):
            raise KeyError("x")
    assert not _probe_locked(str(tmp_path))


def test_another_thread_waits(tmp_path):
    target = str(tmp_path / "f")
    order = []
    trying, acquired = threading.Event(), threading.Event()

    def other():
        trying.set()
        with locking.writer_lock(target):
            acquired.set()
            order.append("thread")

    with locking.writer_lock(target):
        t = threading.Thread(target=other)
        t.start()
        assert trying.wait(10)
        time.sleep(0.2)
        assert not acquired.is_set(), "another thread got the writer lock while it was held"
        order.append("main")
    t.join(30)
    assert order == ["main", "thread"]


def test_different_directories_do_not_block_each_other(tmp_path):
    done = threading.Event()

    def other():
        with locking.writer_lock(str(tmp_path / "b" / "f")):
            done.set()

    with locking.writer_lock(str(tmp_path / "a" / "f")):
        t = threading.Thread(target=other)
        t.start()
        assert done.wait(30)
    t.join(30)


def test_writer_lock_refuses_a_file_as_directory(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as e:
        with locking.writer_lock(str(tmp_path / "file" / "f")):
            pass
    assert e.value.errno in (errno.ENOTDIR, errno.EEXIST)


# --- temps ---------------------------------------------------------------------------------------
def test_temp_names_follow_the_rule(tmp_path):
    final = str(tmp_path / "m.h5")
    names = {os.path.basename(locking.temp_path(final)) for _ in range(50)}
    assert len(names) == 50
    assert all(locking.is_temp_of(n, "m.h5") for n in names)
    assert not locking.is_temp_of("m.h5.tmp-" + HEX16.upper(), "m.h5")
    assert not locking.is_temp_of("m.h5.tmp-" + HEX16[:15], "m.h5")
    assert not locking.is_temp_of("m.h5.tmp-" + HEX16 + "0", "m.h5")
    assert not locking.is_temp_of("m.h5.tmp-foo", "m.h5")
    assert not locking.is_temp_of("xm.h5.tmp-" + HEX16, "m.h5")


def test_sweep_removes_only_temps_of_that_final(tmp_path):
    (tmp_path / f"m.tmp-{HEX16}").write_text("dead file temp")
    (tmp_path / "m.tmp-fedcba9876543210").mkdir()
    (tmp_path / "m.tmp-fedcba9876543210" / "variables").mkdir()
    (tmp_path / "m.tmp-fedcba9876543210" / "variables" / "x").write_text("dead dir temp")
    keep = ["m", "m.tmp-foo", f"m.tmp-{HEX16[:15]}", f"m.tmp-{HEX16.upper()}",
            f"m.tmp-{HEX16}.x", f"n.tmp-{HEX16}", f"mm.tmp-{HEX16}", f"m.old-{HEX16}"]
    for name in keep:
        (tmp_path / name).write_text("not ours to delete")
    os.symlink(str(tmp_path / "m"), str(tmp_path / "m.tmp-0000000000000000"))  # a dead temp too
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("")
    os.symlink(str(outside), str(tmp_path / "m.tmp-1111111111111111"))
    with locking.writer_lock(str(tmp_path / "m")):
        assert locking.sweep_temps(str(tmp_path / "m")) == 4
    assert sorted(os.listdir(tmp_path)) == sorted(keep + ["outside"])
    assert os.listdir(outside) == ["precious"]  # a symlinked temp is unlinked, not followed
    assert locking.sweep_temps(str(tmp_path / "missing_dir" / "m")) == 0


# --- atomic_file ---------------------------------------------------------------------------------
def test_atomic_file_replaces_and_sweeps(tmp_path):
    final = tmp_path / "m.h5"
    final.write_bytes(b"old")
    (tmp_path / f"m.h5.tmp-{HEX16}").write_bytes(b"left by a killed save")
    with locking.atomic_file(str(final)) as tmp:
        assert locking.is_temp_of(os.path.basename(tmp), "m.h5")
        assert _probe_locked(str(tmp_path))  # held across the write
        with open(tmp, "wb") as f:
            f.write(b"new")
        assert final.read_bytes() == b"old"  # nothing visible before the commit
    assert final.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["m.h5"]
    assert not _probe_locked(str(tmp_path))


@pytest.mark.parametrize("fails", ["while_writing", "while_opening", "as_directory", "never_made"])
def test_atomic_file_leaves_nothing_on_error(tmp_path, fails):
    final = tmp_path / "m.h5"
    final.write_bytes(b"old")
    with pytest.raises(OSError):
        with locking.atomic_file(str(final)) as tmp:
            if fails == "while_writing":
                with open(tmp, "wb") as f:
                    f.write(b"half")
                raise OSError(errno.ENOSPC, "No space left on device", tmp)
            if fails == "while_opening":  # like h5py.File(tmp, "w") failing in its __enter__
                fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o644)
                os.close(fd)
                raise OSError(errno.EFBIG, "File too large", tmp)
            if fails == "as_directory":  # a writer that made a directory at the temp name
                os.mkdir(tmp)
                open(os.path.join(tmp, "x"), "w").close()
                raise OSError(errno.EIO, "I/O error", tmp)
            raise OSError(errno.EACCES, "Permission denied", tmp)
    assert final.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.h5"]
    assert not _probe_locked(str(tmp_path))


def test_atomic_file_refuses_a_directory_in_the_way(tmp_path):
    (tmp_path / "m.h5").mkdir()
    with pytest.raises(IsADirectoryError):
        with locking.atomic_file(str(tmp_path / "m.h5")):
            pytest.fail("the body must not run")
    assert os.listdir(tmp_path) == ["m.h5"] and os.listdir(tmp_path / "m.h5") == []


def test_fsync_dir(tmp_path):
    locking.fsync_dir(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        locking.fsync_dir(str(tmp_path / "missing"))
