"""``CheckpointManager``: numbered checkpoints in a directory, the newest ``max_to_keep`` kept."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
import warnings
from typing import Iterable, List, Optional, Set

from fastckpt.checkpoint import locking
from fastckpt.checkpoint import state as state_mod
from fastckpt.checkpoint.bundle import bundle_exists, delete_bundle, recover_bundle
from fastckpt.checkpoint.paths import fspath

__all__ = ["CheckpointManager"]

# <name>-N, then what a checkpoint is made of, then optionally a temp suffix.
_OWN_FILE = re.compile(r"(.+?-[0-9]+)(\.index|\.fastckpt-commit|\.data-[0-9]{5}-of-[0-9]{5})"
                       r"(?:\.tmp-[0-9a-f]{16})?")
_DATA = re.compile(r"\.data-[0-9]{5}-of-[0-9]{5}")


class CheckpointManager:
    """Save ``checkpoint`` as ``directory/<checkpoint_name>-N``, keeping the newest ``max_to_keep``.

    The state file lists only committed checkpoints; it is replaced after each new checkpoint is
    complete and before old ones are deleted, so a crash at any point leaves a valid latest one.

    The manager owns the files ``<checkpoint_name>-N.index``, ``.data-*``, ``.fastckpt-commit``
    (and their ``.tmp-*`` temps) in its directory, and only those: an entry of the state file
    that names anything else (another directory, another name) is ignored with a warning and
    never deleted. What a killed save or delete leaves behind (shards whose index is gone, a
    committed checkpoint the state file does not list yet or any more) is removed when a manager
    is created and after each save; the checkpoints the state file lists are kept. Don't let
    ``Checkpoint.save`` write ``<checkpoint_name>-N`` into a manager's directory: the manager
    does not list those, so it removes them.

    Example:
        >>> import tempfile
        >>> from fastckpt import keras, train
        >>> model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
        >>> manager = train.CheckpointManager(train.Checkpoint(model=model), tempfile.mkdtemp(), max_to_keep=2)
        >>> paths = [manager.save() for _ in range(3)]
        >>> [os.path.basename(p) for p in manager.checkpoints]
        ['ckpt-2', 'ckpt-3']
    """

    def __init__(self, checkpoint, directory: str, max_to_keep: Optional[int] = 5,
                 keep_checkpoint_every_n_hours: Optional[float] = None,
                 checkpoint_name: str = "ckpt", step_counter=None, checkpoint_interval=None,
                 init_fn=None):
        if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 1):
            raise ValueError(f"Expected max_to_keep to be a positive integer or None, got {max_to_keep!r}")
        if keep_checkpoint_every_n_hours is not None or checkpoint_interval is not None:
            raise NotImplementedError("keep_checkpoint_every_n_hours and checkpoint_interval are "
                                      "not supported yet")
        self._checkpoint = checkpoint
        self._directory = fspath(directory, "directory")
        self._max_to_keep = max_to_keep
        self._prefix = os.path.join(self._directory, checkpoint_name)
        self._step_counter = step_counter
        self._init_fn = init_fn
        os.makedirs(self._directory, exist_ok=True)
        self._own_dir, self._base = os.path.split(os.path.abspath(self._prefix))
        self._start_time = time.time()
        self._paths: List[str] = []
        self._times: List[float] = []
        # Under data parallelism rank 0 alone sweeps; every replica reads the same state after.
        self._strategy = getattr(checkpoint, "_strategy", lambda: None)()
        if self._strategy is None:
            self._load(sweep=True)
        else:
            self._strategy.run_on_chief(lambda: self._load(sweep=True))
            if self._strategy.rank != 0:
                self._load(sweep=False)

    def _load(self, sweep: bool) -> None:
        self._paths, self._times = [], []
        with locking.writer_lock(self._prefix) if sweep else contextlib.nullcontext():
            state_path = os.path.join(self._directory, state_mod.STATE_FILENAME)
            st = state_mod.read_state(self._directory)
            listed: Set[str] = set()
            if st is not None:
                latest = self._own(state_mod.resolve(self._directory, st.model_checkpoint_path))
                if st.model_checkpoint_path and latest is not None:
                    listed.add(os.path.basename(latest))  # never swept, whatever the list says
                times = st.all_model_checkpoint_timestamps + [0.0] * len(st.all_model_checkpoint_paths)
                for p, t in zip(st.all_model_checkpoint_paths, times):
                    full = self._own(state_mod.resolve(self._directory, p))
                    if full is None:
                        warnings.warn(f"CheckpointManager: ignoring {p!r} listed in {state_path}: "
                                      f"expected a checkpoint {self._base}-N in {self._own_dir}",
                                      stacklevel=2)
                        continue
                    listed.add(os.path.basename(full))
                    if state_mod.checkpoint_exists(full) and full not in self._paths:
                        self._paths.append(full)
                        self._times.append(t)
            if sweep:
                self._sweep(listed)

    def _own(self, path: str) -> Optional[str]:
        """``path`` as this manager's own ``<directory>/<name>-N``, or ``None`` if it is not one."""
        if "\x00" in path:
            return None
        full = os.path.abspath(path)
        parent, base = os.path.split(full)
        if re.fullmatch(re.escape(self._base) + r"-[0-9]+", base) is None:
            return None
        if parent != self._own_dir and os.path.realpath(parent) != os.path.realpath(self._own_dir):
            return None
        return os.path.join(os.path.dirname(self._prefix), base)

    def _sweep(self, keep: Iterable[str]) -> None:
        """Remove what killed saves and deletes left of this manager's own checkpoints: every
        ``<name>-N`` file in its directory whose N is not in ``keep`` (base names), and the shards
        of a kept one whose index and journal are gone. Dead temps of a kept checkpoint are
        cleaned by rolling it forward. Call with the writer lock held."""
        keep = set(keep)
        own = re.compile(re.escape(self._base) + r"-[0-9]+")
        groups = {}
        try:
            names = os.listdir(self._own_dir)
        except FileNotFoundError:
            return
        for name in names:
            m = _OWN_FILE.fullmatch(name)
            if m is None or own.fullmatch(m.group(1)) is None:
                continue
            groups.setdefault(m.group(1), []).append(name)
        for base, files in sorted(groups.items()):
            prefix = os.path.join(self._own_dir, base)
            if base in keep and bundle_exists(prefix):
                if any(f != base + ".index" and not _DATA.fullmatch(f[len(base):]) for f in files):
                    try:
                        recover_bundle(prefix)  # a journal to roll forward or dead temps
                    except Exception as e:  # a damaged journal: leave it for the reader to report
                        warnings.warn(f"CheckpointManager: could not clean up {prefix}: {e}")
                continue
            # Not a listed checkpoint: the index goes first, so it stops being one at once.
            files.sort(key=lambda f: (f != base + ".index", f != base + ".fastckpt-commit", f))
            for f in files:
                path = os.path.join(self._own_dir, f)
                try:
                    if stat.S_ISDIR(os.lstat(path).st_mode):
                        warnings.warn(f"CheckpointManager: leaving {path}, a directory under a "
                                      f"checkpoint file name")
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def checkpoint(self):
        return self._checkpoint

    @property
    def checkpoints(self) -> List[str]:
        return list(self._paths)

    @property
    def latest_checkpoint(self) -> Optional[str]:
        return self._paths[-1] if self._paths else None

    def save(self, checkpoint_number: Optional[int] = None, check_interval: bool = True,
             options=None, fsync: bool = True, extra=None) -> str:
        ckpt = self._checkpoint
        counter = getattr(ckpt, "save_counter", None)
        if counter is not None:
            counter.assign(counter.value + 1)
        if checkpoint_number is None:
            if counter is None:
                raise ValueError("checkpoint_number is required for objects without a save_counter")
            checkpoint_number = int(counter.value)
        path = f"{self._prefix}-{int(checkpoint_number)}"
        if self._strategy is not None:
            # Every replica writes its shard (rank 0 holds the lock inside); then rank 0 alone
            # records the state and deletes, while the others keep the same list.
            ckpt.write(path, fsync=fsync, extra=extra)
            doomed = self._remember(path)
            self._strategy.run_on_chief(lambda: self._commit_state(path, doomed, fsync))
            return path
        with locking.writer_lock(path):
            if extra is not None:
                ckpt.write(path, fsync=fsync, extra=extra)
            else:
                ckpt.write(path, fsync=fsync)
            self._commit_state(path, self._remember(path), fsync)
        return path

    def _remember(self, path: str) -> List[str]:
        """Adds ``path`` as the latest checkpoint; returns those that fall out of max_to_keep."""
        if path in self._paths:
            i = self._paths.index(path)
            del self._paths[i], self._times[i]
        self._paths.append(path)
        self._times.append(time.time())
        doomed: List[str] = []
        if self._max_to_keep is not None and len(self._paths) > self._max_to_keep:
            doomed = self._paths[: len(self._paths) - self._max_to_keep]
            self._paths = self._paths[-self._max_to_keep:]
            self._times = self._times[-self._max_to_keep:]
        return doomed

    def _commit_state(self, path: str, doomed: List[str], fsync: bool) -> None:
        with locking.writer_lock(path):
            state_mod.write_state(self._directory, path, self._paths, self._times,
                                  last_preserved_timestamp=self._start_time, fsync=fsync)
            for old in doomed:
                try:
                    delete_bundle(old)
                except (OSError, ValueError) as e:  # e.g. a damaged journal: the sweep unlinks it
                    warnings.warn(f"CheckpointManager: could not delete {old} cleanly: {e}")
            self._sweep(os.path.basename(p) for p in self._paths)

    def restore_or_initialize(self) -> Optional[str]:
        if self.latest_checkpoint is not None:
            self._checkpoint.restore(self.latest_checkpoint)
            return self.latest_checkpoint
        if self._init_fn is not None:
            self._init_fn()
        return None
