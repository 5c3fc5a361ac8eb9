"""TensorFlow-compatible tensor bundles ("V2 checkpoints"): ``<prefix>.index`` + ``<prefix>.data-*``.

Files written here are read by ``tf.train.load_checkpoint`` / ``tf.train.list_variables``, and files
written by TensorFlow are read here, without TensorFlow. Writes are atomic: after a crash at any
instant, a reader of the prefix sees exactly the old or exactly the new checkpoint (see
``docs/format.md``). Reads are zero-copy: ``get_tensor`` returns read-only NumPy views of the
memory-mapped data file, checked against their CRC32C on first access.

Example::

    >>> import tempfile, numpy as np
    >>> from fastckpt.checkpoint import write_bundle, BundleReader
    >>> prefix = tempfile.mkdtemp() + "/ckpt"
    >>> write_bundle(prefix, {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.int64(7),
    ...                       "note": b"hello"})
    >>> with BundleReader(prefix) as r:
    ...     r.keys(), r.dtype("w"), r.shape("w"), int(r.get_tensor("step")), r.get_tensor("note")
    (['note', 'step', 'w'], 'float32', (2, 3), 7, b'hello')
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from fastckpt import ops
from fastckpt.checkpoint.locking import test_hook, writer_lock
from fastckpt.checkpoint.paths import fspath
from fastckpt.checks import is_int
from fastckpt.errors import UnsupportedDtypeError

__all__ = [
    "BundleReader",
    "write_bundle",
    "StagedBundle",
    "delete_bundle",
    "recover_bundle",
    "bundle_exists",
    "atomic_write_file",
    "read_small_file",
    "DTYPE_NAMES",
]

_DT_STRING = 7
_DT_BFLOAT16 = 14

#: TensorFlow DataType enum value -> dtype name used by this API.
DTYPE_NAMES: Dict[int, str] = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128",
    19: "float16", 22: "uint32", 23: "uint64",
}
_NUMPY_TO_TF = {np.dtype(name): code for code, name in DTYPE_NAMES.items()
                if name not in ("string", "bfloat16")}

TensorLike = Union[np.ndarray, np.generic, bytes, bytearray, List[bytes], Tuple[bytes, ...]]


def _fspath(prefix: Any, what: str = "prefix") -> str:
    """The path as ``str`` (as the caller gave it, for messages and return values). Non-UTF-8 names
    (surrogate-escaped ``str`` as ``os.listdir`` returns them, or ``bytes``) are fine: the native
    layer is given ``_native_path(p)``, the file system's own bytes."""
    p = fspath(prefix, what)
    if not p or p.endswith(os.sep):
        raise ValueError(f"Expected {what} to name a file prefix such as 'dir/ckpt', got {p!r}")
    return p


def _native_path(p: str) -> bytes:
    """What the C++ layer is given: the file system's bytes for ``p`` (pybind would otherwise encode
    the ``str`` as strict UTF-8 and fail on surrogate-escaped names)."""
    return os.fsencode(p)


def _data_name(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def _refuse_directories(prefix: str, num_shards: Optional[int]) -> None:
    """Raise ``IsADirectoryError`` (errno EISDIR, naming the path) when a directory sits under a name
    the commit of ``prefix`` would create, replace or delete: the index, the journal, the data
    shards to write (``num_shards``) and any existing ``prefix.data-*`` name (stale shards are
    deleted by the commit). Nothing has been written at this point. The native writer checks again."""
    names = [prefix + ".index", prefix + ".fastckpt-commit"]
    if num_shards is not None:
        names += [_data_name(prefix, s, num_shards) for s in range(num_shards)]
    directory, base = os.path.split(prefix)
    try:
        listing = os.listdir(directory or ".")
    except OSError:
        listing = []
    shard = re.compile(re.escape(base) + r"\.data-[0-9]{5}-of-[0-9]{5}")
    names += [os.path.join(directory, n) for n in listing if shard.fullmatch(n)]
    for name in names:
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way of a checkpoint file "
                                    "(expected a regular file or nothing at this name)", name)


def _key_bytes(key: Any) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"Expected tensor names to be str, got {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError("Expected a non-empty tensor name, got '' (the empty key holds the bundle header)")
    b = key.encode("utf-8", "surrogateescape")
    if len(b) > ops.BUNDLE_LIMITS["max_key_bytes"]:
        raise ValueError(f"Expected a tensor name of at most {ops.BUNDLE_LIMITS['max_key_bytes']} bytes, "
                         f"got {len(b)}")
    return b


def _string_elements(key: str, arr: np.ndarray) -> List[bytes]:
    out = []
    for x in arr.reshape(-1):
        if isinstance(x, (bytes, np.bytes_)):
            out.append(bytes(x))
        elif isinstance(x, str):
            out.append(x.encode("utf-8"))
        else:
            raise TypeError(f"Expected bytes or str elements in string tensor {key!r}, got {type(x).__name__}")
    return out


def _prepare(key: str, value: Any) -> Tuple[bytes, int, List[int], Any]:
    """Turns one user value into the (key, dtype, shape, data) tuple the native writer takes."""
    kb = _key_bytes(key)
    if isinstance(value, (bytes, bytearray)):
        return kb, _DT_STRING, [], [bytes(value)]
    if isinstance(value, (list, tuple)):
        arr = np.empty(len(value), dtype=object)
        arr[:] = list(value)
        return kb, _DT_STRING, [len(value)], _string_elements(key, arr)
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"Expected tensor {key!r} to be a numpy array, bytes or a list of bytes, "
                        f"got {type(value).__name__}")
    if value.ndim > ops.BUNDLE_LIMITS["max_rank"]:
        raise ValueError(f"Expected rank <= {ops.BUNDLE_LIMITS['max_rank']} for {key!r}, got {value.ndim}")
    shape = [int(d) for d in value.shape]
    dt = value.dtype
    if dt == object or dt.kind in ("S", "U"):
        return kb, _DT_STRING, shape, _string_elements(key, value)
    if dt.name == "bfloat16":  # ml_dtypes.bfloat16 (as produced by TF / JAX)
        code, value = _DT_BFLOAT16, value.view(np.uint16)
    else:
        code = _NUMPY_TO_TF.get(dt.newbyteorder("=") if dt.byteorder not in ("=", "|") else dt)
        if code is None:
            raise TypeError(f"Expected tensor {key!r} to have one of the dtypes "
                            f"{sorted(set(DTYPE_NAMES.values()))}, got {dt}")
    # Bundles store little-endian, row-major; both conversions copy only when needed.
    if value.dtype.byteorder == ">" or (value.dtype.byteorder == "=" and np.little_endian is False):
        value = value.astype(value.dtype.newbyteorder("<"))
    value = np.ascontiguousarray(value)
    return kb, code, shape, value


def write_bundle(prefix: Union[str, os.PathLike], tensors: Mapping, num_shards: int = 1,
                 fsync: bool = True, threads: Optional[int] = None) -> None:
    """Writes ``tensors`` (name -> array) as a TensorFlow checkpoint at ``prefix``, atomically.

    Values may be NumPy arrays of any bundle dtype (float32/64/16, bfloat16, int8..64, uint8..64, bool,
    complex64/128), NumPy scalars, ``bytes`` (a scalar string), a list of ``bytes`` (a 1-D string
    tensor) or an object/bytes array (a string tensor of that shape). Data is laid out in the
    mapping's order; the index is sorted by name. ``num_shards`` data files are written in parallel.
    ``fsync=False`` keeps the commit atomic against process crashes but not against power loss.
    An existing checkpoint at ``prefix`` is replaced; other readers keep their (old) view.
    ``threads`` caps the writer's threads (default: fastckpt's thread count); a background save
    beside training uses 1 so it does not compete with the training threads.
    """
    path = _fspath(prefix)
    if not isinstance(tensors, Mapping):
        raise TypeError(f"Expected tensors to be a mapping of name -> array, got {type(tensors).__name__}")
    if not is_int(num_shards):
        raise TypeError(f"Expected num_shards to be an int, got {type(num_shards).__name__}")
    if not 1 <= int(num_shards) <= ops.BUNDLE_LIMITS["max_shards"]:
        raise ValueError(f"Expected 1 <= num_shards <= {ops.BUNDLE_LIMITS['max_shards']}, got {num_shards}")
    if not isinstance(fsync, bool):
        raise TypeError(f"Expected fsync to be a bool, got {type(fsync).__name__}")
    items = [_prepare(k, v) for k, v in tensors.items()]
    # One writer per directory (other processes wait), held across the whole write + commit: the
    # native commit removes the prefix's temps it finds, which would be another writer's live ones.
    with writer_lock(path):
        _refuse_directories(path, int(num_shards))
        ops.bundle_write(_native_path(path), items, int(num_shards), fsync, threads=threads)


def write_bundle_collective(prefix: Union[str, os.PathLike], tensors: Mapping, strategy,
                            fsync: bool = True, threads: Optional[int] = None) -> None:
    """``write_bundle`` by every replica of ``strategy`` together (call it on all of them, with
    the same tensors: data-parallel replicas hold identical weights): one data shard per replica,
    ``PREFIX.data-0000r-of-0000N`` holding a contiguous share of the bytes, written in parallel.
    Rank 0 holds the directory's writer lock throughout and commits the index (the native journal
    commit) only after every shard is durable; a replica killed at any point leaves the previous
    checkpoint intact. Any replica's failure is raised on every replica."""
    n = strategy.num_replicas_in_sync
    rank = strategy.rank
    path = _fspath(prefix)
    if not isinstance(tensors, Mapping):
        raise TypeError(f"Expected tensors to be a mapping of name -> array, got {type(tensors).__name__}")
    if not 1 <= n <= ops.BUNDLE_LIMITS["max_shards"]:
        raise ValueError(f"Expected 1 <= replicas <= {ops.BUNDLE_LIMITS['max_shards']}, got {n}")
    items = [_prepare(k, v) for k, v in tensors.items()]
    native = _native_path(path)
    threads = ops.num_threads() if threads is None else max(1, int(threads))
    lock = writer_lock(path) if rank == 0 else contextlib.nullcontext()
    with lock:
        # 1. rank 0 prepares the prefix and hands out the commit's token.
        token, error = None, None
        if rank == 0:
            try:
                _refuse_directories(path, n)
                token = ops.bundle_collective_prepare(native, n)
            except Exception as e:  # raised on every replica below
                error = e
        token, error_text = strategy.bcast((token, None if error is None else _describe(error)))
        if error_text is not None:
            if error is not None:
                raise error
            raise OSError(f"collective save of {path} failed on rank 0: {error_text}")
        # 2. every replica writes its shard.
        crcs, error = None, None
        try:
            test_hook("collective-shard-write")
            crcs = ops.bundle_collective_write(native, items, n, rank, token, fsync, threads)
            test_hook("collective-shard-written")
        except Exception as e:
            error = e
        gathered = strategy.gather((crcs, None if error is None else _describe(error)), root=0)
        # 3. rank 0 commits, or removes every temp if any replica failed.
        failure = None
        if rank == 0:
            failed = [(r, text) for r, (_, text) in enumerate(gathered) if text is not None]
            if failed:
                ops.bundle_collective_abort(native, n, token)
                failure = "; ".join(f"rank {r}: {text}" for r, text in failed)
            else:
                layout = ops.bundle_collective_layout(items, n)
                per_shard = [list(c) for c, _ in gathered]
                all_crcs = [per_shard[s].pop(0) for s in layout]
                try:
                    ops.bundle_collective_commit(native, items, n, token, all_crcs, fsync)
                except Exception as e:
                    error = e
                    failure = _describe(e)
        failure = strategy.bcast(failure, root=0)
        if failure is not None:
            if error is not None:
                raise error
            raise OSError(f"collective save of {path} failed: {failure}")


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class StagedBundle:
    """A snapshot of tensors taken now and committed as a (single-shard) checkpoint later.

    ``stage(tensors)`` copies every value into one reused, page-aligned image of the data file,
    computing each tensor's CRC in the same pass on all of fastckpt's threads, and returns once the
    values may change again. ``write(prefix)`` then commits that image at ``prefix`` exactly as
    ``write_bundle`` would (same files, same atomicity) without reading the values again; with
    ``fsync=True`` the data goes to the device with ``O_DIRECT``, skipping the page-cache copy and
    the dirty pages an fsync would otherwise flush. This is how ``ModelCheckpoint`` saves during
    ``fit``: the snapshot is the only part training waits for. One call at a time per object.

    The files a ``write`` replaces lose their names during the commit but their disk blocks only at
    the next ``write``, at ``release_replaced()`` or when the object goes away, so freeing them
    (a synchronous discard on some mounts) is not part of the commit's latency.

    Example:
        >>> staged = StagedBundle()
        >>> staged.stage({"w": np.ones(3, np.float32)})
        >>> staged.write("/tmp/ckpt/w")  # e.g. on a worker thread
    """

    def __init__(self) -> None:
        self._native = ops.staged_bundle()

    def stage(self, tensors: Mapping, threads: Optional[int] = None,
              prefilled: Optional[Mapping[str, int]] = None) -> None:
        """``prefilled``: name -> CRC-32C of tensors whose bytes are already in the image where
        ``layout()`` put them (filled by the fused trainer); those are not copied again, unless
        the layout has changed since, when they are copied as usual."""
        if not isinstance(tensors, Mapping):
            raise TypeError(f"Expected tensors to be a mapping of name -> array, got {type(tensors).__name__}")
        items = [_prepare(k, v) for k, v in tensors.items()]
        pre = None
        if prefilled:
            pre = {_key_bytes(k): int(c) for k, c in prefilled.items()}
        self._native.stage(items, ops.num_threads() if threads is None else max(1, int(threads)), pre)

    def layout(self, tensors: Mapping) -> Dict[str, int]:
        """Lays ``tensors`` out as ``stage`` would, copying nothing: name -> byte offset in the
        image. Drops what was staged; for a snapshot filled in place before ``stage``."""
        if not isinstance(tensors, Mapping):
            raise TypeError(f"Expected tensors to be a mapping of name -> array, got {type(tensors).__name__}")
        items = [_prepare(k, v) for k, v in tensors.items()]
        return dict(zip(tensors.keys(), self._native.layout(items)))

    @property
    def native(self):
        """The native object (the fused trainer fills its image)."""
        return self._native

    def write(self, prefix: Union[str, os.PathLike], fsync: bool = True) -> None:
        path = _fspath(prefix)
        if not isinstance(fsync, bool):
            raise TypeError(f"Expected fsync to be a bool, got {type(fsync).__name__}")
        if not self._native.staged:
            raise RuntimeError("StagedBundle.write: nothing staged yet (call stage() first)")
        with writer_lock(path):
            _refuse_directories(path, 1)
            self._native.write(_native_path(path), fsync)

    def release_replaced(self) -> None:
        """Frees the disk blocks of the files the last ``write`` replaced (already unlinked)."""
        self._native.release_replaced()

    @property
    def nbytes(self) -> int:
        """Size of the staged data file in bytes (0 before the first stage())."""
        return int(self._native.nbytes)


def _lock_if_directory_exists(p: str):
    """writer_lock(p), except that a missing directory is not created (and needs no lock): deleting
    or recovering there changes nothing, and the native call reports it as before."""
    if not os.path.isdir(os.path.dirname(os.path.abspath(p))):
        return contextlib.nullcontext()
    return writer_lock(p)


def delete_bundle(prefix: Union[str, os.PathLike], fsync: bool = True) -> None:
    """Removes the checkpoint at ``prefix`` (index first, then data shards, then leftovers).

    Readers that already opened it keep working. Missing files are not an error.
    """
    p = _fspath(prefix)
    with _lock_if_directory_exists(p):
        ops.bundle_delete(_native_path(p), fsync)


def recover_bundle(prefix: Union[str, os.PathLike], fsync: bool = True) -> bool:
    """Completes a commit interrupted by a crash and removes orphan temp files; True if it changed anything.

    Writers do this automatically; readers never need it (they resolve an in-flight commit read-only).
    """
    p = _fspath(prefix)
    with _lock_if_directory_exists(p):
        return ops.bundle_recover(_native_path(p), fsync)


def bundle_exists(prefix: Union[str, os.PathLike]) -> bool:
    """Whether a committed (or committing) checkpoint exists at ``prefix``."""
    p = _fspath(prefix)
    return os.path.exists(p + ".index") or os.path.exists(p + ".fastckpt-commit")


def atomic_write_file(path: Union[str, os.PathLike], data: Union[bytes, str], fsync: bool = True) -> None:
    """Replaces ``path`` with ``data`` atomically (temp file, fsync, rename, directory fsync).

    Used for small files such as the ``checkpoint`` state file: readers see the old or the new content.
    """
    p = _fspath(path, "path")
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"Expected data to be bytes or str, got {type(data).__name__}")
    with writer_lock(p):
        if os.path.isdir(p):
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way of the file to save", p)
        ops.atomic_write_file(_native_path(p), bytes(data), fsync)


def read_small_file(path: Union[str, os.PathLike], limit: int, dir_fd: Optional[int] = None,
                    name: Optional[str] = None) -> bytes:
    """Up to ``limit`` + 1 bytes of a regular file (so the caller can tell it is too large).

    ``dir_fd``: ``path`` is relative to that open directory (as ``os.open`` takes it); ``name``:
    how errors name the file (default ``path``). A FIFO or device under the name (which a plain
    ``open`` would block on, or read without end) raises ``OSError`` naming it; a missing file
    raises ``FileNotFoundError``.
    """
    p = _fspath(path, "path")
    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name or p)
        os.set_blocking(fd, True)
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _bfloat16_view(raw: np.ndarray) -> np.ndarray:
    try:
        import ml_dtypes
    except ImportError:  # exact widening: bfloat16 is the top half of a float32
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.view(ml_dtypes.bfloat16)


def _bfloat16_dtype() -> np.dtype:
    """The dtype ``get_tensor`` returns for bfloat16 tensors (see ``_bfloat16_view``)."""
    try:
        import ml_dtypes
    except ImportError:
        return np.dtype(np.float32)
    return np.dtype(ml_dtypes.bfloat16)


class BundleReader:
    """Reads a tensor bundle written by fastckpt or TensorFlow, without TensorFlow.

    Opening reads and verifies only the index; ``get_tensor`` maps the data file lazily and returns a
    read-only, zero-copy view (copies for strings, and for big-endian files), verified against its
    CRC32C on first access. Views stay valid after ``close()``. Malformed files raise
    ``fastckpt.errors.CorruptCheckpointError`` (with ``path``, ``tensor``, ``offset``), a missing
    index or shard ``fastckpt.errors.CheckpointNotFoundError``.

    Example::

        >>> import tempfile, numpy as np
        >>> prefix = tempfile.mkdtemp() + "/ckpt"
        >>> write_bundle(prefix, {"bias": np.zeros(3, np.float32)})
        >>> with BundleReader(prefix) as r:
        ...     r.variable_map(), r.get_tensor("bias").flags.writeable
        ({'bias': (3,)}, False)
    """

    def __init__(self, prefix: Union[str, os.PathLike]):
        self._prefix = _fspath(prefix)
        self._r = ops.bundle_open(_native_path(self._prefix))
        self._keys = [k.decode("utf-8", "surrogateescape") for k in self._r.keys()]

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def num_shards(self) -> int:
        return int(self._r.num_shards)

    @property
    def data_paths(self) -> List[str]:
        return [os.fsdecode(p) for p in self._r.data_paths]

    def keys(self) -> List[str]:
        """Tensor names in byte order (the header entry is not listed)."""
        return list(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._entry(key, raise_missing=False) is not None

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self):
        return iter(self.keys())

    def _entry(self, key: str, raise_missing: bool = True):
        if not isinstance(key, str):
            raise TypeError(f"Expected a tensor name (str), got {type(key).__name__}")
        e = self._r.entry(key.encode("utf-8", "surrogateescape"))
        if e is None and raise_missing:
            raise KeyError(f"Tensor {key!r} not found in checkpoint {self._prefix!r}")
        return e

    def dtype(self, key: str) -> str:
        """The tensor's dtype name ('float32', 'string', 'bfloat16', ... or 'dtype<N>' if unknown)."""
        code = self._entry(key)[0]
        return DTYPE_NAMES.get(code, f"dtype<{code}>")

    def numpy_dtype(self, key: str) -> np.dtype:
        """The NumPy dtype of what ``get_tensor(key)`` returns: ``object`` for strings, and for
        bfloat16 ``ml_dtypes.bfloat16`` when installed, else ``float32`` (exact widening).
        A dtype fastckpt cannot represent raises ``UnsupportedDtypeError`` naming the tensor."""
        code = self._entry(key)[0]
        return self._numpy_dtype(key, code)

    def _numpy_dtype(self, key: str, code: int) -> np.dtype:
        name = DTYPE_NAMES.get(code)
        if name is None:
            raise UnsupportedDtypeError(
                f"Tensor {key!r} of checkpoint {self._prefix!r} has unsupported dtype {code} (TensorFlow "
                f"DataType number), which fastckpt cannot represent (expected one of {sorted(set(DTYPE_NAMES.values()))})",
                path=self._prefix + ".index", tensor=key, dtype=code)
        if name == "string":
            return np.dtype(object)
        if name == "bfloat16":
            return _bfloat16_dtype()
        return np.dtype(name)

    def shape(self, key: str) -> Tuple[int, ...]:
        return tuple(self._entry(key)[1])

    def info(self, key: str) -> Dict[str, Any]:
        """Storage facts of one tensor: dtype, shape, shard, offset and size in bytes."""
        code, shape, shard, offset, size, sliced = self._entry(key)
        return {"dtype": DTYPE_NAMES.get(code, f"dtype<{code}>"), "shape": tuple(shape), "shard": shard,
                "offset": offset, "size": size, "partitioned": sliced}

    def variable_map(self) -> Dict[str, Tuple[int, ...]]:
        """name -> shape, like ``tf.train.load_checkpoint(p).get_variable_to_shape_map()``."""
        return {k: self.shape(k) for k in self._keys}

    def dtype_map(self) -> Dict[str, str]:
        """name -> dtype name, like ``get_variable_to_dtype_map()``."""
        return {k: self.dtype(k) for k in self._keys}

    # -- data -------------------------------------------------------------------------------------
    def get_tensor(self, key: str) -> Union[np.ndarray, bytes]:
        """The tensor's value: a read-only array (a ``bytes`` object for a scalar string).

        String tensors come back as object arrays of ``bytes``; bfloat16 as ``ml_dtypes.bfloat16``
        when that package is installed, else widened exactly to float32.
        """
        code, shape = self._entry(key)[:2]
        self._numpy_dtype(key, code)  # an unknown dtype: UnsupportedDtypeError naming the tensor
        value = self._r.get_tensor(key.encode("utf-8", "surrogateescape"), ops.num_threads())
        if code == _DT_STRING:
            if not shape:
                return value[0]
            arr = np.empty(len(value), dtype=object)
            arr[:] = value
            arr = arr.reshape(shape)
            arr.flags.writeable = False
            return arr
        if code == _DT_BFLOAT16:
            value = _bfloat16_view(value)
            value.flags.writeable = False
        return value

    def verify(self) -> None:
        """Reads every tensor and checks every CRC (the index was verified on open).

        Raises ``CorruptCheckpointError`` naming the first bad tensor and its file.
        """
        self._r.verify(ops.num_threads())

    # -- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Releases file descriptors and mappings; arrays already returned remain valid."""
        self._r.close()

    @property
    def closed(self) -> bool:
        return bool(self._r.closed)

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._keys)} tensors, {self.num_shards} shard(s)"
        return f"<BundleReader {self._prefix!r}: {state}>"
