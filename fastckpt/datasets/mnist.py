"""MNIST, loaded the way ``keras.datasets.mnist.load_data`` loads it — from the same cache file.

The file is Keras' ``mnist.npz`` (keys ``x_train``, ``y_train``, ``x_test``, ``y_test``, all uint8) under
``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``; ``/tmp/.keras/datasets`` when that is not
writable). A file already there is used as is, so a machine that has run Keras needs no network. Only an
absent file is downloaded from Keras' public URL: into a temporary sibling, checked against the published
SHA-256, then renamed into place, so an interrupted download never leaves a truncated ``mnist.npz``.
Arrays are read with ``allow_pickle=False``: a file can hold data, never code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import List, Tuple, Union

import numpy as np

from fastckpt.errors import FastckptError

__all__ = ["load_data", "DatasetError", "DatasetDownloadError", "ORIGIN", "SHA256"]

ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
_KEYS = ("x_train", "y_train", "x_test", "y_test")
_CHUNK = 1 << 20
_TIMEOUT_S = 60

# Indirection so tests can stand in for the network; nothing else should touch it.
_urlopen = urllib.request.urlopen

Arrays = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


class DatasetError(FastckptError, ValueError):
    """A dataset file exists but is not what it should be (truncated, not an npz, wrong arrays)."""


class DatasetDownloadError(FastckptError, OSError):
    """A dataset file is absent and could not be downloaded (no network, HTTP error, wrong checksum)."""


def _cache_dirs() -> List[str]:
    """Keras' cache base (``$KERAS_HOME`` or ``~/.keras``) then its fallback, each with ``datasets/``."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    fallback = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return [os.path.join(os.path.expanduser(base), "datasets"), os.path.join(fallback, "datasets")]


def _writable_dir(candidates: List[str]) -> str:
    for d in candidates:
        try:
            os.makedirs(d, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    raise DatasetDownloadError(f"Expected a writable cache directory for datasets, tried {candidates}")


def _resolve(path: Union[str, "os.PathLike[str]"]) -> Tuple[str, bool]:
    """Returns (file path, exists). An absolute ``path`` is used as given, like ``os.path.join`` in Keras."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Expected path to be a file name such as 'mnist.npz', got {type(path).__name__}")
    path = os.fspath(path)
    if not path:
        raise ValueError("Expected path to be a file name such as 'mnist.npz', got ''")
    if os.path.isabs(path):
        return path, os.path.exists(path)
    candidates = _cache_dirs()
    for d in candidates:  # a read-only cache that already holds the file is still a cache hit
        full = os.path.join(d, path)
        if os.path.exists(full):
            return full, True
    return os.path.join(_writable_dir(candidates), path), False


def _download(url: str, dest: str, sha256: str) -> None:
    """Downloads ``url`` to ``dest`` atomically: a temporary sibling, SHA-256 checked, fsynced, renamed."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    print(f"Downloading data from {url}")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest) or ".", prefix=os.path.basename(dest) + ".",
                               suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with _urlopen(url, timeout=_TIMEOUT_S) as response:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                raise DatasetDownloadError(
                    f"{os.path.basename(dest)} is not in the cache ({dest}) and downloading it from {url} "
                    f"failed: {reason}. Copy the file there, or retry with network access."
                ) from e
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise DatasetDownloadError(
                f"Expected SHA-256 {sha256} for {url}, got {got}; the download was discarded and {dest} "
                "was not written."
            )
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read_npz(fpath: str) -> dict:
    try:
        loaded = np.load(fpath, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DatasetError(f"Expected {fpath} to be an .npz archive, got a single .npy array")
        with loaded as f:
            missing = [k for k in _KEYS if k not in f.files]
            if missing:
                raise DatasetError(f"Expected arrays {list(_KEYS)} in {fpath}, missing {missing} (found {f.files})")
            return {k: f[k] for k in _KEYS}
    except DatasetError:
        raise
    except ValueError as e:
        # np.load raises ValueError both for pickled (object) arrays and for bytes it cannot parse.
        raise DatasetError(f"Could not read {fpath} as an MNIST .npz without pickle: {e}") from e
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise DatasetError(f"{fpath} is corrupt or truncated (expected Keras' mnist.npz): {e}") from e


def _check(fpath: str, arrays: dict) -> None:
    for k in _KEYS:
        if arrays[k].dtype != np.uint8:
            raise DatasetError(f"Expected {k} in {fpath} to be uint8, got {arrays[k].dtype}")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DatasetError(f"Expected x_{split} in {fpath} to have shape (n, 28, 28), got {x.shape}")
        if y.shape != (x.shape[0],):
            raise DatasetError(f"Expected y_{split} in {fpath} to have shape ({x.shape[0]},), got {y.shape}")
        if y.size and y.max() > 9:
            raise DatasetError(f"Expected labels 0-9 in y_{split} of {fpath}, found {int(y.max())}")


def load_data(path: Union[str, "os.PathLike[str]"] = "mnist.npz") -> Arrays:
    """Loads MNIST as ``(x_train, y_train), (x_test, y_test)``, like ``keras.datasets.mnist.load_data``.

    Args:
        path: file name inside the cache directory (``$KERAS_HOME/datasets``), or an absolute path.

    Returns:
        uint8 arrays: ``x_train`` (60000, 28, 28) with pixels 0-255, ``y_train`` (60000,) with digits 0-9,
        and the test set, (10000, 28, 28) and (10000,), for Keras' file.

    Raises:
        DatasetDownloadError: the file is absent and could not be downloaded or failed its checksum.
        DatasetError: the file is corrupt, truncated, pickled, or holds the wrong arrays (the message
            names the file).

    Example:
        >>> import os, tempfile, numpy as np
        >>> home = tempfile.mkdtemp(); os.makedirs(os.path.join(home, "datasets"))
        >>> z = np.zeros((2, 28, 28), np.uint8); lab = np.array([3, 7], np.uint8)
        >>> np.savez(os.path.join(home, "datasets", "mnist.npz"), x_train=z, y_train=lab, x_test=z, y_test=lab)
        >>> os.environ["KERAS_HOME"] = home
        >>> (x_train, y_train), (x_test, y_test) = load_data()
        >>> x_train.shape, y_train.tolist()
        ((2, 28, 28), [3, 7])
        >>> del os.environ["KERAS_HOME"]
    """
    fpath, exists = _resolve(path)
    if not exists:
        _download(ORIGIN, fpath, SHA256)
    arrays = _read_npz(fpath)
    _check(fpath, arrays)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
