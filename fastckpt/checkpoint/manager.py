"""``CheckpointManager``: numbered checkpoints in a directory, the newest ``max_to_keep`` kept."""

from __future__ import annotations

import os
import time
from typing import List, Optional

from fastckpt.checkpoint import state as state_mod
from fastckpt.checkpoint.bundle import delete_bundle

__all__ = ["CheckpointManager"]


class CheckpointManager:
    """Save ``checkpoint`` as ``directory/<checkpoint_name>-N``, keeping the newest ``max_to_keep``.

    The state file lists only committed checkpoints; it is replaced after each new checkpoint is
    complete and before old ones are deleted, so a crash at any point leaves a valid latest one.

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
        self._directory = os.fspath(directory)
        self._max_to_keep = max_to_keep
        self._prefix = os.path.join(self._directory, checkpoint_name)
        self._step_counter = step_counter
        self._init_fn = init_fn
        os.makedirs(self._directory, exist_ok=True)
        self._start_time = time.time()
        self._paths: List[str] = []
        self._times: List[float] = []
        st = state_mod.read_state(self._directory)
        if st is not None:
            for p, t in zip(st.all_model_checkpoint_paths,
                            st.all_model_checkpoint_timestamps + [0.0] * len(st.all_model_checkpoint_paths)):
                full = state_mod.resolve(self._directory, p)
                if state_mod.checkpoint_exists(full):
                    self._paths.append(full)
                    self._times.append(t)

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
        if extra is not None:
            ckpt.write(path, fsync=fsync, extra=extra)
        else:
            ckpt.write(path, fsync=fsync)
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
        state_mod.write_state(self._directory, path, self._paths, self._times,
                              last_preserved_timestamp=self._start_time, fsync=fsync)
        for old in doomed:
            delete_bundle(old)
        return path

    def restore_or_initialize(self) -> Optional[str]:
        if self.latest_checkpoint is not None:
            self._checkpoint.restore(self.latest_checkpoint)
            return self.latest_checkpoint
        if self._init_fn is not None:
            self._init_fn()
        return None
