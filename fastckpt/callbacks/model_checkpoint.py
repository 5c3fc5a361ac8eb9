"""``ModelCheckpoint``: save weights (or the whole model) during ``fit``, as Keras does, plus
retention (``max_to_keep``, ``keep_best``) that survives a restart."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import stat
import string
import warnings
from typing import Any, Dict, List, Optional

import numpy as np

from fastckpt.callbacks.callback import Callback
from fastckpt.callbacks.monitor import MonitorCallback
from fastckpt.checkpoint.bundle import StagedBundle, atomic_write_file, delete_bundle, read_small_file
from fastckpt.checkpoint.paths import fspath
from fastckpt.checkpoint.priority import lower_current_thread, restore_thread, yield_compute_thread
from fastckpt.checks import is_int
from fastckpt.saving.formats import FILE_SUFFIXES
from fastckpt.saving.weights_io import tf_weight_tensors, write_tf_weights

__all__ = ["ModelCheckpoint"]

# Callbacks (fastckpt's own) whose epoch-end and validation hooks never change the weights or
# the optimizer slots: they may run between the last step of an epoch and this callback's save
# without spoiling a snapshot taken in that step. EarlyStopping only without restore_best_weights.
_HARMLESS = frozenset(["History", "ProgbarLogger", "CSVLogger", "TerminateOnNaN", "ModelCheckpoint",
                       "ReduceLROnPlateau", "LearningRateScheduler", "BackupAndRestore", "TensorBoard",
                       "EarlyStopping"])
_EPOCH_HOOKS = ("on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end")

_BUNDLE_SUFFIX = re.compile(r"\.index|\.fastckpt-commit|\.data-[0-9]{5}-of-[0-9]{5}")


def _fixed_directory(template: str) -> str:
    """The directory of a file name template up to its first field (``run/{epoch}/cp`` -> ``run``)."""
    return os.path.dirname(template.split("{")[0] + "x")


def _template_fields(filepath: str) -> List[str]:
    try:
        return [f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(filepath)
                if f is not None]
    except ValueError as e:
        raise ValueError(f"ModelCheckpoint: invalid file name template {filepath!r}: {e}") from None


class _FusedSnapshot:
    """A ``ModelCheckpoint``'s request that the fused trainer fill its staged image in the last
    optimizer step of an epoch (see ``fastckpt.training.fused.FusedTrainer.train_steps``)."""

    def __init__(self, owner: "ModelCheckpoint", epoch: int):
        self.owner, self.epoch, self._keys = owner, epoch, {}

    def prepare(self, buffers):
        owner = self.owner
        if owner._staged is None:
            owner._staged = StagedBundle()
        owner._finish_job()  # the previous save's write must be done with the image
        tensors = tf_weight_tensors(owner.model)
        offsets = owner._staged.layout(tensors)
        by_buffer = {}
        for key, value in tensors.items():
            if (isinstance(value, np.ndarray) and value.dtype == np.float32
                    and value.flags.c_contiguous):
                by_buffer[(value.__array_interface__["data"][0], value.nbytes)] = key
        targets = []
        for i, arrays in enumerate(buffers):
            for k, a in enumerate(arrays):
                key = None if a is None else by_buffer.get((a.__array_interface__["data"][0], a.nbytes))
                if key is not None:
                    targets.append((i, k, offsets[key]))
                    self._keys[(i, k)] = key
        if not targets:
            return None
        return owner._staged.native, targets

    def filled(self, crcs) -> None:
        self.owner._prefilled = (self.epoch, {self._keys[(i, k)]: crc for i, k, crc in crcs})


class ModelCheckpoint(MonitorCallback):
    """Save the model's weights every epoch (or every ``save_freq`` batches).

    ``filepath`` may be a template with ``{epoch:04d}``, ``{batch}`` and any log key
    (``{val_loss:.2f}``). Beyond Keras: ``max_to_keep`` keeps only the newest N files written by
    this callback and ``keep_best`` keeps the best K by ``monitor``; both remember what they wrote
    in a small JSON file beside the checkpoints, so a restarted run prunes correctly.

    Example:
        >>> cb = ModelCheckpoint("training_1/cp.ckpt", save_weights_only=True, verbose=1)
    """

    def __init__(self, filepath, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq="epoch", options=None, initial_value_threshold: Optional[float] = None,
                 max_to_keep: Optional[int] = None, keep_best: Optional[int] = None,
                 background: bool = True, **kwargs):
        period = kwargs.pop("period", None)
        if kwargs:
            raise TypeError(f"ModelCheckpoint: unexpected keyword argument(s) {sorted(kwargs)}")
        self.filepath = fspath(filepath, "filepath")
        super().__init__(monitor, mode)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = "max" if self.maximize else "min"
        self.best = (initial_value_threshold if initial_value_threshold is not None
                     else self.worst_value())
        self._period_epochs = 1
        if period is not None:
            warnings.warn("`period` argument is deprecated. Please use `save_freq` to specify the "
                          "frequency in number of batches seen.")
            if not isinstance(period, int) or period < 1:
                raise ValueError(f"Expected period to be a positive integer, got {period!r}")
            self._period_epochs = period
        if save_freq != "epoch" and (not is_int(save_freq)
                                     or save_freq < 1):
            raise ValueError(f"Unrecognized save_freq: {save_freq!r}. Expected 'epoch' or a positive "
                             f"integer number of batches")
        self.save_freq = save_freq
        for name, value in (("max_to_keep", max_to_keep), ("keep_best", keep_best)):
            if value is not None and (not is_int(value) or value < 1):
                raise ValueError(f"Expected {name} to be a positive integer or None, got {value!r}")
        self.max_to_keep = max_to_keep
        self.keep_best = keep_best
        self.background = bool(background)
        self._executor = None
        self._pending = None
        self._staged = None  # fastckpt.checkpoint.bundle.StagedBundle, reused save after save
        self._job = None  # the worker's job for the last save: commit, then free what it replaced
        self._writer_tid = None  # native id of the writer thread while it runs at idle priority
        self._prefilled = None  # (epoch, {key: crc}) filled by the fused trainer's last step
        self._batches_since_save = 0
        self._current_epoch = 0
        self._written: List[Dict[str, Any]] = []  # [{"path": ..., "value": ...}], oldest first

    # The background writer runs at SCHED_IDLE ("idle") or as the thread that created it
    # ("normal"); with fused_snapshot the last optimizer step of an epoch whose end saves fills
    # the snapshot (fused path of fit only). Class attributes, for benchmarks and tests. Both
    # off by default: neither paid on the tutorial (bench/mc_breakdown.py, 7 rounds, 2 threads:
    # fit ratio 1.22 today, 1.28 idle writer, 1.24 fused, 1.35 both; the idle writer is starved
    # by the spinning OpenMP team until the next save waits for it).
    writer_priority = "normal"
    fused_snapshot = False
    # While the writer computes (not while it waits in fsync or an O_DIRECT write), fastckpt's
    # kernels run on one thread fewer; the count is read per kernel call and results are
    # bit-identical either way. Off until measured on a quiet machine (bench/mc_breakdown.py):
    # on a VM loaded 5-14x, one thread beats two whatever the writer does, so its 0.68-0.95x of
    # the plain fit there says nothing about the target.
    yield_compute_thread = False

    @staticmethod
    def auto_maximizes(monitor: str) -> bool:
        """tf.keras' ``ModelCheckpoint`` rule: "acc" anywhere in the name, or a name starting with
        "fmeasure", improves upwards."""
        return "acc" in monitor or monitor.startswith("fmeasure")

    # --- hooks ------------------------------------------------------------------------------------
    def implements_batch_hooks(self, kind: str) -> bool:
        return kind == "train" and self.save_freq != "epoch"

    def on_train_begin(self, logs=None):
        if not self.save_weights_only and not hasattr(self.model, "save"):
            raise NotImplementedError("ModelCheckpoint(save_weights_only=False) needs model.save")
        known = {"epoch", "batch"}
        names = list(getattr(self.model, "metrics_names", []) or [])
        known.update(names)
        if self.params.get("do_validation", True):
            known.update("val_" + n for n in names)
        unknown = [f for f in _template_fields(self.filepath) if f and f not in known]
        if unknown:
            raise KeyError(f"ModelCheckpoint: the file name template {self.filepath!r} uses "
                           f"{unknown}, which are not in the logs of this training run. Available "
                           f"keys: {sorted(known)}")
        self._load_ledger()

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches_since_save += 1
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._current_epoch, batch=batch, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        try:
            if self.save_freq == "epoch" and (epoch + 1) % self._period_epochs == 0:
                self._save(epoch, batch=None, logs=logs)
        finally:
            self._prefilled = None  # a speculative snapshot not saved (save_best_only) is dropped

    def _fused_snapshot_request(self, epoch: int, callbacks) -> Optional[_FusedSnapshot]:
        """Asked by fit before an epoch that runs in one native call: a request to fill the
        snapshot of this epoch's save in its last optimizer step, or None when this epoch does
        not end with a background save or something between that step and the save (another
        callback's validation or epoch-end hook) might change the weights."""
        if not (self.fused_snapshot and self.save_freq == "epoch" and self.save_weights_only
                and self.background and (epoch + 1) % self._period_epochs == 0
                and not self.filepath.endswith(FILE_SUFFIXES)):
            return None
        strategy = getattr(self.model, "_distribute_strategy", None)
        if strategy is not None and strategy.num_replicas_in_sync > 1:
            return None
        before = True
        for cb in getattr(callbacks, "callbacks", ()):
            if cb is self:
                before = False
                continue
            cls = type(cb)
            if (cls.__module__.startswith("fastckpt.callbacks.") and cls.__name__ in _HARMLESS
                    and not getattr(cb, "restore_best_weights", False)):
                continue
            hooks = _EPOCH_HOOKS + (("on_epoch_end",) if before else ())
            if any(getattr(cls, h, None) is not getattr(Callback, h, None) for h in hooks):
                return None
        return _FusedSnapshot(self, epoch)

    # --- state kept across a restart by BackupAndRestore -----------------------------------------
    def get_training_state(self) -> Dict[str, Any]:
        return {"best": float(self.best), "batches_since_save": self._batches_since_save}

    def set_training_state(self, state: Dict[str, Any]) -> None:
        self.best = float(state["best"])
        self._batches_since_save = int(state["batches_since_save"])

    # --- saving -------------------------------------------------------------------------------------
    def _path(self, epoch: int, batch: Optional[int], logs: Dict[str, Any]) -> str:
        fields = dict(logs or {})
        fields["epoch"] = epoch + 1
        if batch is not None:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as e:
            raise KeyError(f"Failed to format the ModelCheckpoint file path {self.filepath!r}: key "
                           f"{e} is not in the logs {sorted(fields)}") from None

    def _save(self, epoch: int, batch: Optional[int], logs) -> None:
        logs = logs or {}
        strategy = getattr(self.model, "_distribute_strategy", None)
        verbose = self.verbose if strategy is None or strategy.rank == 0 else 0  # rank 0 prints
        path = self._path(epoch, batch, logs)
        current = logs.get(self.monitor)
        if self.save_best_only or self.keep_best:
            if current is None:
                warnings.warn(f"Can save best model only with {self.monitor} available, skipping.")
                if self.save_best_only:
                    return
        if self.save_best_only:
            if not self.monitor_op(current, self.best):
                if verbose > 0:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
        elif verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        self._wait()
        if strategy is not None and strategy.num_replicas_in_sync > 1:
            # Every replica takes part in the save (one shard each for a TF prefix); rank 0 alone
            # keeps the ledger and deletes old checkpoints. In the loop's thread: the replicas'
            # collectives must stay in one order.
            if self.save_weights_only:
                self.model.save_weights(path, overwrite=True)
            else:
                self.model.save(path, overwrite=True)
            strategy.run_on_chief(lambda: self._record(path, current))
            return
        if self.save_weights_only and self.background and not path.endswith(FILE_SUFFIXES):
            self._save_in_background(path, current, epoch if batch is None else None)
            return
        if self.save_weights_only:
            self.model.save_weights(path, overwrite=True)
        else:
            self.model.save(path, overwrite=True)
        self._record(path, current)

    def _save_in_background(self, path: str, current, epoch: Optional[int] = None) -> None:
        # Training waits only for the snapshot (a copy with CRCs on all threads into a reused
        # image of the data file, or, on the fused path, nothing but the small tensors: the last
        # optimizer step of the epoch filled in the weights and slots); the worker writes it
        # (O_DIRECT) and commits, at idle CPU priority.
        from concurrent.futures import Future, ThreadPoolExecutor
        if self._staged is None:
            self._staged = StagedBundle()
        self._finish_job()
        prefilled, self._prefilled = self._prefilled, None
        if prefilled is not None and prefilled[0] != epoch:
            prefilled = None
        self._staged.stage(tf_weight_tensors(self.model),
                           prefilled=prefilled[1] if prefilled is not None else None)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastckpt-save")
        staged, committed = self._staged, Future()
        idle = self.writer_priority == "idle"
        share = yield_compute_thread if self.yield_compute_thread else contextlib.nullcontext

        def job():
            if idle:
                self._writer_tid = lower_current_thread()
            try:
                with share():
                    write_tf_weights(path, staged)
            except BaseException as e:
                committed.set_exception(e)
                return
            committed.set_result((path, current))
            # After the save counts as done: the blocks of the file it replaced are freed here,
            # not on the way to the commit (for the last save of a fit, after fit returns).
            staged.release_replaced()

        self._job = self._executor.submit(job)
        self._pending = committed

    def _boost_writer(self, future) -> None:
        """Before waiting for the writer: back to normal priority, so the wait is not stretched
        by whatever else runs (where the system allows it; see fastckpt.checkpoint.priority)."""
        if not future.done() and self._writer_tid is not None:
            restore_thread(self._writer_tid)

    def _finish_job(self) -> None:
        """Wait for the previous save's job (commit, then freeing what it replaced): the staged
        image is free again."""
        if self._job is not None:
            job, self._job = self._job, None
            self._boost_writer(job)
            job.result()

    def _wait(self) -> None:
        """Finish the save in flight (raising its error, if any) and do its bookkeeping."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._boost_writer(pending)
            path, current = pending.result()
            self._record(path, current)

    def on_train_end(self, logs=None):
        try:
            self._wait()
        finally:
            if self._executor is not None:
                # The last save is committed; its job may still be freeing the blocks of the
                # file it replaced, which the next save waits for before reusing the snapshot.
                self._executor.shutdown(wait=False)
                self._executor = None

    # --- retention ------------------------------------------------------------------------------------
    def _ledger_path(self) -> str:
        # In the template's directory; with fields in directory names, in the last one without.
        directory = _fixed_directory(self.filepath) or "."
        base = os.path.basename(self.filepath).split("{")[0] or "checkpoint"
        return os.path.join(directory, f".{base}.fastckpt-keep.json")

    def _load_ledger(self) -> None:
        if not (self.max_to_keep or self.keep_best):
            return
        try:
            # At most 1 MiB, as before; a FIFO under the name is refused instead of blocking fit.
            data = json.loads(read_small_file(self._ledger_path(), (1 << 20) - 1).decode("utf-8"))
            written = [e for e in data.get("written", []) if isinstance(e, dict)
                       and isinstance(e.get("path"), str)]
        except FileNotFoundError:
            written = []
        except (ValueError, UnicodeDecodeError, AttributeError):
            warnings.warn(f"Ignoring unreadable checkpoint ledger {self._ledger_path()}")
            written = []
        # The ledger is only a note: an entry this callback could not have written (outside its
        # directory, not of its file name template) is never acted on.
        self._written = []
        for e in written:
            why = self._foreign(e["path"])
            if why is None:
                self._written.append(e)
            else:
                self._ignore(e["path"], why)

    def _ignore(self, path: str, why: str) -> None:
        warnings.warn(f"ModelCheckpoint: not deleting {path!r}, listed in the checkpoint ledger "
                      f"{self._ledger_path()}: {why}; expected a checkpoint this callback wrote "
                      f"(file name template {self.filepath!r})", stacklevel=3)

    def _template_regex(self):
        """The absolute paths ``filepath`` can produce: its literal text, each field one or more
        characters other than ``/`` (and NUL)."""
        parts = []
        for literal, field, _, _ in string.Formatter().parse(os.path.abspath(self.filepath)):
            parts.append(re.escape(literal))
            if field is not None:
                parts.append(r"[^/\x00]+")
        return re.compile("".join(parts), re.DOTALL)

    def _foreign(self, path: str) -> Optional[str]:
        """``None`` if ``path`` is a name this callback's template gives (in its own directory,
        reached without a symlink the template does not spell out), else why not."""
        if "\x00" in path:
            return "the name holds a NUL byte"
        full = os.path.abspath(path)  # "a/../b" is judged by where it leads
        if self._template_regex().fullmatch(full) is None:
            return "it does not match the file name template (or lies outside its directory)"
        # Directories the template names with fields must be real directories, not symlinks out.
        fixed = _fixed_directory(os.path.abspath(self.filepath))
        sub = os.path.dirname(full)
        while len(sub) > len(fixed):
            if os.path.islink(sub):
                return f"{sub} is a symbolic link"
            sub = os.path.dirname(sub)
        return None

    def _kind(self, path: str) -> str:
        """What this callback writes at ``path``: 'file' (.h5/.hdf5/.keras), 'dir' (a model
        directory) or 'bundle' (a TensorFlow checkpoint prefix)."""
        if path.endswith(FILE_SUFFIXES):
            return "file"
        return "bundle" if self.save_weights_only else "dir"

    def _record(self, path: str, value) -> None:
        if not (self.max_to_keep or self.keep_best):
            return
        value = None if value is None or not math.isfinite(float(value)) else float(value)
        self._written = [e for e in self._written if e["path"] != path] + [{"path": path, "value": value}]
        keep = set()
        if self.max_to_keep:
            keep.update(e["path"] for e in self._written[-self.max_to_keep:])
        if self.keep_best:
            scored = [e for e in self._written if e.get("value") is not None]
            scored.sort(key=lambda e: e["value"], reverse=self.mode == "max")
            keep.update(e["path"] for e in scored[: self.keep_best])
        keep.add(path)
        doomed = [e["path"] for e in self._written if e["path"] not in keep]
        self._written = [e for e in self._written if e["path"] in keep]
        atomic_write_file(self._ledger_path(), json.dumps({"written": self._written}).encode("utf-8"))
        for old in doomed:
            self._delete(old)

    def _delete(self, path: str) -> None:
        """Delete the checkpoint this callback wrote at ``path``, and nothing else: a name outside
        the template, a symlink, or a file of another kind than the callback writes there is left
        alone with a warning; a name with nothing behind it is skipped quietly."""
        why = self._foreign(path)
        if why is not None:
            self._ignore(path, why)
            return
        full = os.path.abspath(path)
        kind = self._kind(full)
        if kind != "bundle":
            try:
                mode = os.lstat(full).st_mode
            except FileNotFoundError:
                return
            if kind == "file" and stat.S_ISREG(mode):
                os.unlink(full)
            elif (kind == "dir" and stat.S_ISDIR(mode)
                  and os.path.isfile(os.path.join(full, "fastckpt_model.json"))):
                shutil.rmtree(full, ignore_errors=True)  # never follows symlinks inside
            else:
                self._ignore(path, f"it is not a {'model directory' if kind == 'dir' else 'regular file'}")
            return
        # A TensorFlow checkpoint: its index, data shards and commit journal, regular files all.
        directory, base = os.path.split(full)
        try:
            names = [n for n in os.listdir(directory) if n.startswith(base)
                     and _BUNDLE_SUFFIX.fullmatch(n[len(base):])]
        except FileNotFoundError:
            return
        for n in names:
            try:
                mode = os.lstat(os.path.join(directory, n)).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                self._ignore(path, f"{n} is not a regular file")
                return
        if names:
            try:
                delete_bundle(full)
            except (OSError, ValueError) as e:  # e.g. a damaged commit journal under the name
                warnings.warn(f"ModelCheckpoint: could not delete the old checkpoint {path}: {e}")

