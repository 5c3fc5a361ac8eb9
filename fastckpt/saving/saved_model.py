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
committed as a whole (``atomic_directory``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from fastckpt.errors import CheckpointNotFoundError, CorruptCheckpointError, UnsafeFileError

__all__ = ["save_model_dir", "load_model_dir", "is_model_dir", "METADATA", "FORMAT_NAME",
           "FORMAT_VERSION"]

METADATA = "fastckpt_model.json"
FORMAT_NAME = "fastckpt.model_dir"
FORMAT_VERSION = 1
MAX_METADATA_BYTES = 16 << 20


def is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, METADATA))


def save_model_dir(model, path: str, overwrite: bool = True, include_optimizer: bool = True,
                   fsync: bool = True) -> None:
    from fastckpt.checkpoint.saver import save_trackable
    from fastckpt.saving import model_config
    from fastckpt.saving.atomic_dir import atomic_directory
    from fastckpt.saving.inference_plan import plan_extra

    meta: Dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": model_config.model_to_config(model),
        "training_config": model_config.compile_to_config(model) if include_optimizer else None,
        "rng_state": model._get_rng_state(),
    }
    with atomic_directory(path, overwrite=overwrite, fsync=fsync) as tmp:
        os.makedirs(os.path.join(tmp, "variables"))
        os.makedirs(os.path.join(tmp, "assets"))
        with open(os.path.join(tmp, METADATA), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        root = model if include_optimizer else _WeightsOnly(model)
        # fsync of the individual files is done once for the whole tree by the commit.
        # The inference plan (keys as seen from `root`) lets the C++ runtime load this directory.
        save_trackable(root, os.path.join(tmp, "variables", "variables"), fsync=False,
                       extra=plan_extra(model, root))


class _WeightsOnly:
    """The model's trackable graph without its optimizer (``include_optimizer=False``)."""

    def __init__(self, model):
        self._model = model

    def _trackable_children(self, for_restore: bool = False):
        return [(n, c) for n, c in self._model._trackable_children(for_restore) if n != "optimizer"]


def load_model_dir(path: str, custom_objects: Optional[dict] = None, compile: bool = True):
    from fastckpt.checkpoint.saver import restore_trackable
    from fastckpt.saving import model_config

    meta_path = os.path.join(path, METADATA)
    if not os.path.isfile(meta_path):
        raise CheckpointNotFoundError(f"{path} is not a fastckpt model directory (no {METADATA})")
    from fastckpt.checkpoint.bundle import read_small_file
    raw = read_small_file(meta_path, MAX_METADATA_BYTES)
    if len(raw) > MAX_METADATA_BYTES:
        raise UnsafeFileError(f"{meta_path}: metadata larger than {MAX_METADATA_BYTES} bytes")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptCheckpointError(f"{meta_path}: not valid JSON ({e})", path=meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CorruptCheckpointError(f"{meta_path}: expected format {FORMAT_NAME!r}, got "
                                     f"{meta.get('format') if isinstance(meta, dict) else meta!r:.80}",
                                     path=meta_path)
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise CorruptCheckpointError(f"{meta_path}: format_version {meta.get('format_version')!r} is "
                                     f"newer than this fastckpt reads ({FORMAT_VERSION})", path=meta_path)
    model = model_config.model_from_config(meta["model_config"], custom_objects=custom_objects)
    training = meta.get("training_config")
    if compile and training:
        model.compile(**model_config.compile_from_config(training, custom_objects=custom_objects))
        model.optimizer.build(model.trainable_weights)
    prefix = os.path.join(path, "variables", "variables")
    restore_trackable(model if (compile and training) else _WeightsOnly(model), prefix,
                      strict=True)
    if meta.get("rng_state"):
        model._set_rng_state(meta["rng_state"])
    return model
