"""``BackupAndRestore``: resume an interrupted ``fit`` where it stopped, bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from typing import Any, Dict, Optional

from fastckpt.callbacks.callback import Callback
from fastckpt.checkpoint import locking
from fastckpt.checkpoint.checkpoint import Checkpoint
from fastckpt.checkpoint.manager import CheckpointManager
from fastckpt.checkpoint.paths import fspath
from fastckpt.checkpoint.saver import read_extra
from fastckpt.checkpoint.state import STATE_FILENAME
from fastckpt.checks import is_int
from fastckpt.distribute import replicated_strategy
from fastckpt.errors import CheckpointNotFoundError

__all__ = ["BackupAndRestore"]

_STATE_KEY = "_fastckpt/training_state"


class BackupAndRestore(Callback):
    """Back up the model, optimizer, random state and callback state at the end of every epoch
    (or every ``save_freq`` batches); when ``fit`` starts and a backup exists, restore it and skip
    the epochs already done. Each backup is one atomic checkpoint commit, so a kill at any moment
    leaves the previous backup usable.

    After a completed ``fit`` the backup is deleted (``delete_checkpoint=True``) state file first,
    so a kill during the deletion leaves a directory that names no checkpoint: the next ``fit``
    starts afresh and removes the rest. A backup whose files are missing (what an interrupted
    deletion can leave) is discarded with a warning; one whose bytes are damaged raises
    ``CorruptCheckpointError`` and is left for the user to look at.

    Example:
        >>> import tempfile
        >>> cb = BackupAndRestore(tempfile.mkdtemp())
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint: bool = True,
                 save_before_preemption: bool = False):
        super().__init__()
        if not backup_dir:
            raise ValueError("Empty backup_dir argument passed")
        if save_freq != "epoch" and (not is_int(save_freq)
                                     or save_freq < 1):
            raise ValueError(f"Invalid value for save_freq: {save_freq!r}; expected 'epoch' or a "
                             f"positive integer")
        if save_freq != "epoch":
            raise NotImplementedError("BackupAndRestore: only save_freq='epoch' is supported yet")
        if save_before_preemption:
            raise NotImplementedError("save_before_preemption is not supported")
        self.backup_dir = fspath(backup_dir, "backup_dir")
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        self._manager = None
        self._pending_callback_state: Optional[Dict[str, Any]] = None
        self._resume_epoch: Optional[int] = None
        self._callbacks = []

    def set_peer_callbacks(self, callbacks) -> None:
        self._callbacks = list(callbacks)

    def resume_epoch(self) -> Optional[int]:
        return self._resume_epoch

    def _ckpt_dir(self) -> str:
        return os.path.join(self.backup_dir, "chief")

    def _make_manager(self):
        return CheckpointManager(Checkpoint(model=self.model), self._ckpt_dir(), max_to_keep=1)

    def _peers(self):
        """The other callbacks of this fit, keyed by position."""
        return {f"{i}:{type(cb).__name__}": cb for i, cb in enumerate(self._callbacks)
                if cb is not self}

    def on_train_begin(self, logs=None):
        if self.model.optimizer is not None:
            self.model.optimizer.build(self.model.trainable_weights)
        chief = self._ckpt_dir()
        leftovers = os.path.isdir(chief) and any(True for _ in os.scandir(chief))
        strategy = replicated_strategy(self.model)
        if strategy is not None:  # every replica takes rank 0's decisions (they are collective)
            leftovers = strategy.bcast(leftovers)
        self._manager = self._make_manager()  # removes files the state file does not name
        latest = self._manager.latest_checkpoint
        self._resume_epoch = None
        if latest is None:
            if leftovers:  # an interrupted deletion (or a kill before the first backup)
                warnings.warn(f"BackupAndRestore: {self.backup_dir} holds no complete backup (the "
                              f"remains of an interrupted save or deletion); removing it, training "
                              f"starts from the beginning", stacklevel=2)
                self._delete_backup()
                self._manager = self._make_manager()
            return
        try:
            raw = read_extra(latest, _STATE_KEY)
        except CheckpointNotFoundError as e:
            # A file of the named backup is gone (damaged bytes raise CorruptCheckpointError
            # instead). Saves never remove a file of the latest backup and the deletion after a
            # completed fit removes the state file first, so this is a deletion interrupted by an
            # older fastckpt (or by hand) after training completed: nothing to resume from.
            warnings.warn(f"BackupAndRestore: discarding the incomplete backup in {self.backup_dir} "
                          f"({e}); training starts from the beginning", stacklevel=2)
            self._delete_backup()
            self._manager = self._make_manager()
            return
        state = json.loads(raw.decode("utf-8")) if raw else None
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise ValueError(f"Backup {latest} has no readable training state")
        self._manager.checkpoint.restore(latest).assert_existing_objects_matched()
        self.model._set_rng_state(state["rng_state"])
        self._resume_epoch = state["epoch"] + 1
        self._pending_callback_state = state.get("callbacks", {})

    def on_epoch_begin(self, epoch, logs=None):
        # Applied here, after every callback's on_train_begin has reset itself.
        if self._pending_callback_state is not None:
            for key, cb in self._peers().items():
                if key in self._pending_callback_state:
                    cb.set_training_state(self._pending_callback_state[key])
            self._pending_callback_state = None

    def on_checkpoint_committed(self, epoch, logs=None):
        """After every callback's ``on_epoch_end``, so the backup holds their updated state
        (EarlyStopping's patience count, ModelCheckpoint's best value)."""
        peers = {key: cb.get_training_state() for key, cb in self._peers().items()}
        state = {
            "epoch": int(epoch),
            "rng_state": self.model._get_rng_state(),
            "callbacks": {key: value for key, value in peers.items() if value is not None},
        }
        self._manager.save(extra={_STATE_KEY: json.dumps(state).encode("utf-8")})

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            self._delete_backup()

    def _delete_backup(self) -> None:
        """Delete the backup so that a kill at any step leaves a directory a restart reads as no
        backup: first the state file (the only thing that names a checkpoint), durably, then
        the rest."""
        strategy = replicated_strategy(self.model)
        if strategy is not None:  # rank 0 deletes; the others wait for it
            strategy.run_on_chief(self._delete_files)
        else:
            self._delete_files()

    def _delete_files(self) -> None:
        state = os.path.join(self._ckpt_dir(), STATE_FILENAME)
        if os.path.isdir(self._ckpt_dir()):
            with locking.writer_lock(state) as chief:
                try:
                    os.unlink(state)
                except FileNotFoundError:
                    pass
                else:
                    locking.fsync_dir(chief)
        shutil.rmtree(self.backup_dir, ignore_errors=True)
