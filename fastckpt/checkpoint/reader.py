"""``load_checkpoint`` / ``list_variables``: read any tensor of a checkpoint by key."""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np

from fastckpt.checkpoint.bundle import BundleReader
from fastckpt.checkpoint.state import latest_checkpoint
from fastckpt.errors import CheckpointNotFoundError

__all__ = ["CheckpointReader", "load_checkpoint", "list_variables"]


def _resolve(ckpt_dir_or_file: str) -> str:
    path = os.fspath(ckpt_dir_or_file)
    if os.path.isdir(path):
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointNotFoundError(f"Couldn't find a checkpoint in directory {path}")
        return latest
    return path


class CheckpointReader:
    """``tf.train.load_checkpoint``'s reader: ``get_tensor`` returns a read-only view of the
    mapped data file (zero-copy); CRCs are checked on first read of each tensor."""

    def __init__(self, prefix: str):
        self._reader = BundleReader(prefix)

    def get_tensor(self, name: str) -> np.ndarray:
        return self._reader.get_tensor(name)

    def has_tensor(self, name: str) -> bool:
        return name in set(self._reader.keys())

    def get_variable_to_shape_map(self) -> Dict[str, List[int]]:
        return {k: list(self._reader.shape(k)) for k in self._reader.keys()}

    def get_variable_to_dtype_map(self) -> Dict[str, np.dtype]:
        """name -> the NumPy dtype ``get_tensor`` returns (``object`` for strings; bfloat16 as
        ``ml_dtypes.bfloat16`` when installed, else float32). A dtype fastckpt cannot represent
        raises ``fastckpt.errors.UnsupportedDtypeError`` naming the tensor."""
        return {k: self._reader.numpy_dtype(k) for k in self._reader.keys()}

    def close(self) -> None:
        self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_checkpoint(ckpt_dir_or_file: str) -> CheckpointReader:
    return CheckpointReader(_resolve(ckpt_dir_or_file))


def list_variables(ckpt_dir_or_file: str) -> List[Tuple[str, List[int]]]:
    with BundleReader(_resolve(ckpt_dir_or_file)) as r:
        return sorted((k, list(r.shape(k))) for k in r.keys())
