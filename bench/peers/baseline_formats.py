"""Checkpoint baselines that need no framework: raw file I/O, ``np.savez``, h5py, safetensors.

Each ``ckpt_methods(method)`` returns ``(save, load, None)`` with ``save(path, tensors)`` and
``load(path, keys) -> {key: array}``. Loads return materialized arrays (what a user gets), so the
time includes allocating them. Nothing here calls fsync: the comparison is the write path through
the page cache, the same for every method.
"""

from __future__ import annotations

import numpy as np

from bench.workloads.base import Unavailable


def _raw():
    # The floor: the same bytes written back to back with no header, no checksum, no framing.
    # The loader knows the shapes out of band, which no real format can do.
    layout = {}

    def save(path, tensors):
        with open(path, "wb", buffering=0) as f:
            for k, t in tensors.items():
                layout[k] = (t.shape, t.dtype)
                f.write(memoryview(np.ascontiguousarray(t)).cast("B"))

    def load(path, keys):
        out = {}
        with open(path, "rb", buffering=0) as f:
            for k in keys:
                shape, dtype = layout[k]
                buf = np.empty(shape, dtype)
                view = memoryview(buf.reshape(-1)).cast("B")
                got = 0
                while got < len(view):  # readinto may return short counts on large reads
                    n = f.readinto(view[got:])
                    if not n:
                        raise EOFError(f"raw file {path} ended early")
                    got += n
                out[k] = buf
        return out

    return save, load, None


def _npz():
    def save(path, tensors):
        np.savez(path, **tensors)

    def load(path, keys):
        with np.load(path) as z:  # NpzFile is lazy: index every key to really read it
            return {k: z[k] for k in keys}

    return save, load, None


def _h5py():
    try:
        import h5py
    except ImportError:
        raise Unavailable("h5py not installed") from None

    def save(path, tensors):
        with h5py.File(path, "w") as f:
            for k, t in tensors.items():
                f.create_dataset(k, data=t)

    def load(path, keys):
        with h5py.File(path, "r") as f:
            return {k: f[k][()] for k in keys}

    return save, load, None


def _safetensors():
    try:
        from safetensors.numpy import load_file, save_file
    except ImportError:
        raise Unavailable("safetensors not installed") from None

    def save(path, tensors):
        save_file(tensors, path)

    def load(path, keys):
        return load_file(path)

    return save, load, None


_METHODS = {"raw": _raw, "npz": _npz, "h5py": _h5py, "safetensors": _safetensors}


def ckpt_methods(method):
    return _METHODS[method]()
