"""The directory format: ``model.save('saved_model/my_model')``.

```
my_model/
  fastckpt_model.json    format name and version, model_config, training_config, rng_state
  variables/variables.index, variables/variables.data-00000-of-00001
                         a TensorFlow tensor bundle: weights + optimizer state, same keys as
                         model.save_weights, readable with tf.train.load_checkpoint
  assets/                (empty; kept for the layout users know)
```
It is not a TensorFlow SavedModel: there is no graph (``saved_model.pb``). The directory is
committed as a whole (``atomic_directory``) and never modified afterwards; a load reads one
committed generation through one directory descriptor (``load_model_dir``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

from fastckpt.checks import is_int
from fastckpt.errors import (CheckpointError, CheckpointNotFoundError, CorruptCheckpointError,
                             FastckptError, UnsafeFileError)
from fastckpt.checkpoint.bundle import read_small_file
from fastckpt.checkpoint.saver import restore_trackable, save_trackable
from fastckpt.saving import compile_config, limits, model_config
from fastckpt.saving.atomic_dir import atomic_directory, previous_generation
from fastckpt.saving.inference_plan import plan_extra

__all__ = ["save_model_dir", "load_model_dir", "is_model_dir", "METADATA", "FORMAT_NAME",
           "FORMAT_VERSION"]

METADATA = "fastckpt_model.json"
FORMAT_NAME = "fastckpt.model_dir"
FORMAT_VERSION = 1
MAX_METADATA_BYTES = 16 << 20
LOAD_ATTEMPTS = 64  # generations a load may see replaced under it before it gives up


def is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, METADATA))


def save_model_dir(model, path: str, overwrite: bool = True, include_optimizer: bool = True,
                   fsync: bool = True, strategy=None) -> None:
    """Write the model directory at ``path`` in one atomic commit. With a ``strategy`` of several
    replicas every replica calls this: rank 0 builds the directory and commits it, and each
    replica writes its own data shard of ``variables/variables`` into it (on a file system all
    ranks share, as for ``save_weights``); any replica's failure is raised on every replica and
    leaves the previous directory in place."""
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        _save_model_dir_sharded(model, path, include_optimizer, fsync, strategy)
        return
    meta = _metadata(model, include_optimizer)
    with atomic_directory(path, overwrite=overwrite, fsync=fsync) as tmp:
        _write_layout(tmp, meta)
        root = model if include_optimizer else _WeightsOnly(model)
        # fsync of the individual files is done once for the whole tree by the commit.
        # The inference plan (keys as seen from `root`) lets the C++ runtime load this directory.
        save_trackable(root, os.path.join(tmp, "variables", "variables"), fsync=False,
                       extra=plan_extra(model, root))


def _metadata(model, include_optimizer: bool) -> Dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": model_config.model_to_config(model),
        "training_config": compile_config.compile_to_config(model) if include_optimizer else None,
        "rng_state": model._get_rng_state(),
    }


def _write_layout(tmp: str, meta: Dict[str, Any]) -> None:
    os.makedirs(os.path.join(tmp, "variables"))
    os.makedirs(os.path.join(tmp, "assets"))
    with open(os.path.join(tmp, METADATA), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)


def _save_model_dir_sharded(model, path: str, include_optimizer: bool, fsync: bool,
                            strategy) -> None:
    # Every replica runs the same three collective steps whatever fails, so none waits forever:
    # 1. rank 0 opens the temp directory and broadcasts it (or its error); 2. the collective
    # bundle write, one shard per replica; 3. rank 0 commits and broadcasts the outcome.
    root = model if include_optimizer else _WeightsOnly(model)
    extra = plan_extra(model, root)
    rank = strategy.rank
    sent = False
    error: Optional[BaseException] = None

    def shards(tmp):
        prefix = os.path.join(tmp, "variables", "variables")
        save_trackable(root, prefix, fsync=fsync, extra=extra, strategy=strategy)

    if rank == 0:
        try:
            with atomic_directory(path, overwrite=True, fsync=fsync) as tmp:
                _write_layout(tmp, _metadata(model, include_optimizer))
                sent = True
                strategy.bcast((tmp, None))
                shards(tmp)
        except Exception as e:  # raised below, after the others have heard of it
            error = e
            if not sent:  # the others stop at step 1
                strategy.bcast((None, f"{type(e).__name__}: {e}"))
                raise
        strategy.bcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        return
    tmp, failed = strategy.bcast(None)
    if failed is not None:
        raise OSError(f"model.save of {path} failed on rank 0: {failed}")
    try:
        shards(tmp)
    except Exception as e:  # the collective write raises on every replica
        error = e
    outcome = strategy.bcast(None)
    if error is not None:
        raise error
    if outcome is not None:
        raise OSError(f"model.save of {path} failed on rank 0: {outcome}")


class _WeightsOnly:
    """The model's trackable graph without its optimizer (``include_optimizer=False``)."""

    def __init__(self, model):
        self._model = model

    def _trackable_children(self, for_restore: bool = False):
        return [(n, c) for n, c in self._model._trackable_children(for_restore) if n != "optimizer"]


def load_model_dir(path: str, custom_objects: Optional[dict] = None, compile: bool = True):
    """Load one committed generation of the model directory at ``path``.

    Everything is read through one descriptor of the directory (the metadata with ``dir_fd``, the
    variables bundle through ``/proc/self/fd/<fd>/variables/variables``): a committed directory
    is never modified, only exchanged for a new one and then deleted, so the metadata and the
    weights come from the same save even while another process keeps saving to ``path``. If the
    generation being read is deleted under the load (a newer save replaced it), the load starts
    again on the new one, up to ``LOAD_ATTEMPTS`` times.
    """
    path = os.fspath(path)
    for _ in range(LOAD_ATTEMPTS):
        fd, source = _open_generation(path)
        try:
            root = _fd_root(fd, source)
            try:
                return _load_generation(fd, root, path, custom_objects, compile)
            except (OSError, FastckptError) as e:
                if _is_current(fd, source):
                    _show_user_path(e, root, path)
                    raise
                # This generation was replaced and is being deleted: read the new one.
        finally:
            os.close(fd)
    raise CheckpointError(f"{path}: the model directory was replaced by other saves "
                          f"{LOAD_ATTEMPTS} times while it was being loaded; expected it to stay "
                          f"in place for one load")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _open_generation(path: str) -> Tuple[int, str]:
    """A descriptor of the directory holding ``path``'s latest committed generation: ``path``
    itself, or, while a fallback commit has moved it aside, the old copy."""
    for _ in range(LOAD_ATTEMPTS):
        try:
            return os.open(path, _DIR_FLAGS), path
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            raise CheckpointNotFoundError(f"{path} is not a fastckpt model directory (not a "
                                          f"directory)") from None
        old = previous_generation(path)
        if old is not None:
            try:
                return os.open(old, _DIR_FLAGS), old
            except FileNotFoundError:
                continue  # put back or replaced meanwhile: look again
        if not os.path.lexists(path):
            break
    raise CheckpointNotFoundError(f"No model directory found at {path}")


def _fd_root(fd: int, source: str) -> str:
    """A path that reaches the directory open at ``fd`` whatever it is renamed to."""
    root = f"/proc/self/fd/{fd}"
    try:
        if os.path.samestat(os.stat(root), os.fstat(fd)):
            return root
    except OSError:
        pass
    return source  # no /proc: paths it is (there the commit has no atomic exchange either)


def _is_current(fd: int, source: str) -> bool:
    """Whether the directory open at ``fd`` is still the one ``source`` names."""
    st = os.fstat(fd)
    if st.st_nlink == 0:
        return False
    try:
        return os.path.samestat(os.stat(source), st)
    except OSError:
        return False


def _show_user_path(e: BaseException, root: str, path: str) -> None:
    """Errors raised while reading through ``/proc/self/fd/N`` name the user's path instead."""
    if root == path:
        return
    if isinstance(e, OSError) and not isinstance(e, FastckptError):
        if isinstance(e.filename, str):
            e.filename = e.filename.replace(root, path)
        return
    e.args = tuple(a.replace(root, path) if isinstance(a, str) else a for a in e.args)
    if isinstance(getattr(e, "path", None), str):
        e.path = e.path.replace(root, path)


def _read_metadata(fd: int, meta_path: str) -> bytes:
    try:
        return read_small_file(METADATA, MAX_METADATA_BYTES, dir_fd=fd, name=meta_path)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{os.path.dirname(meta_path)} is not a fastckpt model "
                                      f"directory (no {METADATA})") from None


def _load_generation(fd: int, root: str, path: str, custom_objects, compile: bool):

    meta_path = os.path.join(path, METADATA)
    raw = _read_metadata(fd, meta_path)
    if len(raw) > MAX_METADATA_BYTES:
        raise UnsafeFileError(f"{meta_path}: metadata larger than {MAX_METADATA_BYTES} bytes")
    meta = limits.load_json(raw, meta_path, MAX_METADATA_BYTES)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CorruptCheckpointError(f"{meta_path}: expected format {FORMAT_NAME!r}, got "
                                     f"{meta.get('format') if isinstance(meta, dict) else meta!r:.80}",
                                     path=meta_path)
    version = meta.get("format_version")
    if not is_int(version) or not 1 <= version <= FORMAT_VERSION:
        raise CorruptCheckpointError(f"{meta_path}: expected format_version 1 to {FORMAT_VERSION} "
                                     f"(a newer one needs a newer fastckpt), got {version!r:.40}",
                                     path=meta_path)
    if "model_config" not in meta:
        raise CorruptCheckpointError(f"{meta_path}: expected a 'model_config' entry, found only "
                                     f"{sorted(meta)!r:.200}", path=meta_path)
    training = meta.get("training_config")
    # A config may not ask for more weights than the variables bundle could possibly hold.
    max_params = max(_weights_bytes(root, path), 2**20)
    try:
        model = model_config.model_from_config(meta["model_config"], custom_objects=custom_objects,
                                               max_params=max_params)
        if compile and training:
            kwargs = compile_config.compile_from_config(training, custom_objects=custom_objects)
            try:
                model.compile(**kwargs)
                model.optimizer.build(model.trainable_weights)
            except (FastckptError, NotImplementedError):
                raise
            except (TypeError, ValueError, KeyError) as e:  # values the file gave compile()
                raise CorruptCheckpointError(f"training_config: compile() refused it: "
                                             f"{type(e).__name__}: {e}") from None
        if meta.get("rng_state"):
            model._set_rng_state(meta["rng_state"])
    except (FastckptError, NotImplementedError) as e:
        if meta_path in str(e):
            raise
        raise _with_file(e, meta_path) from None
    prefix = os.path.join(root, "variables", "variables")
    restore_trackable(model if (compile and training) else _WeightsOnly(model), prefix,
                      strict=True)
    return model


def _weights_bytes(root: str, path: str) -> int:
    """Bytes in the generation's variables data files."""
    total = 0
    try:
        with os.scandir(os.path.join(root, "variables")) as it:
            for entry in it:
                if entry.name.startswith("variables.data-") and entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path} is not a complete model directory (no "
                                      f"variables/)") from None
    return total


def _with_file(e: BaseException, meta_path: str) -> BaseException:
    """The same error, its message starting with the file it came from."""
    message = f"{meta_path}: {e}"
    if isinstance(e, CorruptCheckpointError):
        return CorruptCheckpointError(message, path=meta_path, tensor=e.tensor, offset=e.offset)
    try:
        return type(e)(message)
    except TypeError:
        return CorruptCheckpointError(message, path=meta_path)
