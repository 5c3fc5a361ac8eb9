"""Bounds every Keras-file loader enforces before it trusts a byte of a file.

A Keras file is data from somewhere else. Each check below turns a hostile or broken file into a
typed error (``UnsafeFileError`` for "refused on principle", ``CorruptCheckpointError`` for "not
what the format allows") before anything is allocated on the file's say-so: JSON is size- and
depth-bounded; every HDF5 file (weights or whole model, tf_keras or Keras 3 layout, alone or inside
a ``.keras``) is opened only through :func:`open_h5`, which walks its whole tree once before any
value is read (only plain datasets stored whole in the file itself; declared sizes bounded by the
file's size, so a load costs a small multiple of the file); a ZIP's end record is checked before
``zipfile`` parses its central directory, and its members for path traversal, odd compression and
decompression bombs.

The numbers are module constants so an application with unusual models can raise them.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import stat
import struct
import zipfile
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from fastckpt.checks import is_int
from fastckpt.errors import (CheckpointNotFoundError, CorruptCheckpointError, FastckptError,
                             UnsafeFileError)

__all__ = [
    "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_JSON_ITEMS", "MAX_LAYERS", "MAX_RANK", "MAX_DIM", "MAX_PARAMS",
    "MAX_TENSOR_BYTES", "MAX_ATTR_BYTES", "MAX_H5_OBJECTS", "MAX_H5_DEPTH", "MAX_STORAGE_RATIO",
    "MAX_H5_EXPANSION", "MAX_ZIP_MEMBERS", "MAX_ZIP_MEMBER_BYTES", "MAX_ZIP_RATIO",
    "MAX_ZIP_DIRECTORY_BYTES",
    "load_json", "check_json_depth", "check_shape", "check_h5", "open_h5", "H5Tree", "h5_errors",
    "read_str_attr", "read_str_list_attr", "zip_directory_bounds", "open_zip", "check_zip",
    "check_zip_member",
]

MAX_JSON_BYTES = 32 * 2**20      # a 10 000-layer config is ~5 MiB
MAX_JSON_DEPTH = 64              # Keras configs nest ~6 deep
MAX_JSON_ITEMS = 2_000_000       # values and containers (a 10 000-layer config has ~300 000)
MAX_LAYERS = 10_000
MAX_RANK = 32                    # HDF5's own limit; TF allows 254 but no Keras weight has > 8
MAX_DIM = 2**31 - 1
MAX_PARAMS = 2**33               # elements a config may ask us to allocate (32 GiB of float32)
MAX_TENSOR_BYTES = 2**36
MAX_ATTR_BYTES = MAX_JSON_BYTES
MAX_H5_OBJECTS = 250_000         # links in one HDF5 file; a 10 000-layer model with Adam has ~100 000
MAX_H5_DEPTH = 64                # group nesting; Keras nests ~6 deep (more for nested models)
MAX_STORAGE_RATIO = 100          # declared / stored bytes of one filtered (compressed) dataset
MAX_H5_EXPANSION = 8             # all datasets' declared bytes / the file's size (beyond 1 MiB)
MAX_ZIP_MEMBERS = 10_000
MAX_ZIP_DIRECTORY_BYTES = 4 * 2**20  # central directory: ~400 bytes per member at the member limit
MAX_ZIP_MEMBER_BYTES = 2**36
MAX_ZIP_RATIO = 100              # uncompressed / compressed, beyond 1 MiB

_SMALL = 2**20  # below this, ratio checks do not apply: tiny members compress absurdly well


def check_json_depth(obj: Any, what: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Iterative walk, so a deep document cannot exhaust the Python stack here either."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise UnsafeFileError(f"{what}: JSON nested deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def load_json(raw, what: str, limit: int = MAX_JSON_BYTES, path: Optional[str] = None) -> Any:
    """Parse ``raw`` (str or bytes) as JSON after checking its size, depth and encoding; ``path``
    (the file) is set on a ``CorruptCheckpointError``."""
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    if isinstance(raw, (bytes, bytearray, np.bytes_)):
        if len(raw) > limit:
            raise UnsafeFileError(f"{what}: {len(raw)} bytes of JSON, the limit is {limit}")
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorruptCheckpointError(f"{what}: expected UTF-8 JSON, got undecodable bytes ({e})",
                                         path=path) from None
    if not isinstance(raw, str):
        raise CorruptCheckpointError(f"{what}: expected a JSON string, got {type(raw).__name__}",
                                     path=path)
    if len(raw) > limit:
        raise UnsafeFileError(f"{what}: {len(raw)} characters of JSON, the limit is {limit}")
    # Parsed JSON costs ~60 bytes per value ("[{},{},...]" would be ~20x its text): bound the
    # count first (an upper bound: separators inside strings count too).
    items = raw.count(",") + raw.count("[") + raw.count("{")
    if items > MAX_JSON_ITEMS:
        raise UnsafeFileError(f"{what}: about {items} JSON values, the limit is {MAX_JSON_ITEMS}")
    try:
        # parse_constant refuses NaN/Infinity: not JSON, and never in a config we write.
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise UnsafeFileError(f"{what}: JSON nested too deeply to parse") from None
    except ValueError as e:
        raise CorruptCheckpointError(f"{what}: expected valid JSON, got a parse error: {e}",
                                     path=path) from None
    check_json_depth(value, what)
    return value


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def check_shape(shape: Iterable, what: str, allow_none: bool = False) -> tuple:
    """A declared shape: a list of non-negative ints (``None`` allowed for batch axes)."""
    if not isinstance(shape, (list, tuple)):
        raise CorruptCheckpointError(f"{what}: expected a shape list, got {type(shape).__name__}")
    if len(shape) > MAX_RANK:
        raise UnsafeFileError(f"{what}: rank {len(shape)} exceeds the limit {MAX_RANK}")
    out = []
    for d in shape:
        if d is None and allow_none:
            out.append(None)
            continue
        if not is_int(d) or not 0 <= d <= MAX_DIM:
            raise CorruptCheckpointError(f"{what}: expected dimensions in [0, {MAX_DIM}]"
                                         f"{' or null' if allow_none else ''}, got {shape!r:.200}")
        out.append(int(d))
    return tuple(out)


_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32"}  # HDF5's built-in lossless filters


def _dataset_bytes(oid, path: str, where: str) -> tuple:
    """Checks one dataset's type, shape and storage; returns (declared bytes, stored bytes)."""
    import h5py
    try:
        dtype = oid.dtype
    except (TypeError, ValueError) as e:
        raise CorruptCheckpointError(f"{where}: dataset {path} has an HDF5 type NumPy cannot "
                                     f"represent ({e}); expected a numeric or bool array",
                                     path=where, tensor=path) from None
    if dtype.kind not in "fiub" or dtype.fields is not None or dtype.itemsize > 16:
        raise CorruptCheckpointError(f"{where}: dataset {path} has dtype {dtype}, expected a "
                                     f"numeric or bool array", path=where, tensor=path)
    dcpl = oid.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.VIRTUAL or dcpl.get_external_count() > 0:
        raise UnsafeFileError(f"{where}: dataset {path} reads from other files (virtual or "
                              f"external storage); refused")
    if layout not in (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED):
        raise UnsafeFileError(f"{where}: dataset {path} has storage layout {layout}; expected "
                              f"compact, contiguous or chunked")
    shape = oid.shape
    if shape is None:  # a null dataspace holds no array at all
        raise CorruptCheckpointError(f"{where}: dataset {path} has a null dataspace, expected an "
                                     f"array", path=where, tensor=path)
    if len(shape) > MAX_RANK:
        raise UnsafeFileError(f"{where}: dataset {path} has rank {len(shape)} > {MAX_RANK}")
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * dtype.itemsize
    if nbytes > MAX_TENSOR_BYTES:
        raise UnsafeFileError(f"{where}: dataset {path} declares shape {shape} ({nbytes} bytes), "
                              f"the limit is {MAX_TENSOR_BYTES}")
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    unknown = [f for f in filters if f not in _FILTERS]
    if unknown:
        raise UnsafeFileError(f"{where}: dataset {path} uses HDF5 filter(s) {unknown}; only "
                              f"{sorted(_FILTERS.values())} are accepted")
    stored = oid.get_storage_size()
    if nbytes == 0:
        return 0, stored
    if layout == h5py.h5d.CHUNKED:
        chunk = dcpl.get_chunk()
        if len(chunk) != len(shape) or any(c <= 0 for c in chunk):
            raise CorruptCheckpointError(f"{where}: dataset {path} has chunk shape {chunk} for "
                                         f"shape {shape}", path=where, tensor=path)
        expected = 1
        for d, c in zip(shape, chunk):
            expected *= -(-int(d) // int(c))
        allocated = oid.get_num_chunks()
        if allocated != expected:
            # Unwritten chunks read as the fill value: the file would not hold what it declares.
            raise UnsafeFileError(f"{where}: dataset {path} declares shape {shape} ({nbytes} bytes) "
                                  f"in {expected} chunks but stores {allocated}; refused as a "
                                  f"shape bomb (a dataset must be stored whole)")
    if not filters and stored < nbytes:
        raise UnsafeFileError(f"{where}: dataset {path} declares shape {shape} ({nbytes} bytes) "
                              f"but stores only {stored} bytes; refused as a shape bomb (a dataset "
                              f"must be stored whole)")
    if filters and nbytes > MAX_STORAGE_RATIO * stored:
        raise UnsafeFileError(f"{where}: dataset {path} expands {stored} stored bytes to {nbytes}, "
                              f"more than {MAX_STORAGE_RATIO}x; refused as a decompression bomb")
    return nbytes, stored


class H5Tree:
    """An open HDF5 file whose every object passed :func:`check_h5`; read datasets with
    :meth:`read`, which refuses anything the walk did not check."""

    def __init__(self, file, where: str, size: int):
        self.file = file
        self.where = where
        self.size = size
        self.datasets: Dict[int, str] = {}   # object address -> path, for every checked dataset
        self.declared = 0

    def read(self, ds) -> Any:
        """The value of dataset ``ds`` (an ``h5py.Dataset`` of this file)."""
        import h5py
        if not isinstance(ds, h5py.Dataset):
            raise CorruptCheckpointError(f"{self.where}: {getattr(ds, 'name', ds)} is not a "
                                         f"dataset", path=self.where)
        if h5py.h5o.get_info(ds.id).addr not in self.datasets:
            raise UnsafeFileError(f"{self.where}: dataset {ds.name} was not checked")
        return ds[()]


def check_h5(f, where: str, size: int) -> H5Tree:
    """The one walk every HDF5 read goes through: visit every link of file ``f`` (``size`` bytes
    on disk) once, before any value is read, and refuse

    * links that are not hard links (soft, external, user-defined), objects reached twice (hard
      link cycles, one dataset under several names), objects that are neither groups nor datasets,
      more than ``MAX_H5_OBJECTS`` links, nesting deeper than ``MAX_H5_DEPTH``;
    * datasets stored outside the file (external storage, virtual datasets), of non-numeric types,
      with filters other than deflate/shuffle/fletcher32, or not stored whole (unallocated
      contiguous storage or chunks, which read as the fill value);
    * more stored bytes than the file has, or more declared bytes in total than
      ``MAX_H5_EXPANSION`` times the file (a filtered dataset may also expand at most
      ``MAX_STORAGE_RATIO`` times).
    """
    import h5py
    h5o, h5l = h5py.h5o, h5py.h5l
    tree = H5Tree(f, where, size)
    seen = {h5o.get_info(f.id).addr}
    stack = [("", f.id, 0)]
    links = 0
    stored_total = 0
    while stack:
        path, gid, depth = stack.pop()
        found: List[tuple] = []

        def collect(name, info):
            found.append((name, info.type))
            # Stop early: a group may hold far more links than any model needs.
            return True if links + len(found) > MAX_H5_OBJECTS else None

        gid.links.iterate(collect, info=True)
        links += len(found)
        if links > MAX_H5_OBJECTS:
            raise UnsafeFileError(f"{where}: more than {MAX_H5_OBJECTS} HDF5 objects")
        for raw, kind in found:
            name = raw.decode("utf-8", "replace")
            child = f"{path}/{name}"
            if kind != h5l.TYPE_HARD:
                what = {h5l.TYPE_SOFT: "soft", h5l.TYPE_EXTERNAL: "external"}.get(kind, "user-defined")
                raise UnsafeFileError(f"{where}: {child} is a {what} link; only plain groups and "
                                      f"datasets are accepted (no soft or external links)")
            oid = h5o.open(gid, raw)
            info = h5o.get_info(oid)
            if info.addr in seen:
                raise UnsafeFileError(f"{where}: {child} reaches an object seen before (a hard link "
                                      f"cycle, or one object under several names); each object "
                                      f"may be linked only once, not more than once")
            seen.add(info.addr)
            if info.type == h5o.TYPE_GROUP:
                if depth + 1 >= MAX_H5_DEPTH:
                    raise UnsafeFileError(f"{where}: groups nested more than {MAX_H5_DEPTH} deep "
                                          f"at {child}")
                stack.append((child, oid, depth + 1))
            elif info.type == h5o.TYPE_DATASET:
                nbytes, stored = _dataset_bytes(oid, child, where)
                stored_total += stored
                tree.declared += nbytes
                tree.datasets[info.addr] = child
            else:
                raise UnsafeFileError(f"{where}: {child} is an HDF5 object of type {info.type}; "
                                      f"only groups and datasets are accepted")
    if stored_total > size:
        raise CorruptCheckpointError(f"{where}: datasets claim {stored_total} stored bytes, the "
                                     f"file has {size}", path=where)
    if tree.declared > MAX_H5_EXPANSION * size + _SMALL:
        raise UnsafeFileError(f"{where}: datasets declare {tree.declared} bytes in total, more than "
                              f"{MAX_H5_EXPANSION}x the file's {size} bytes; refused")
    return tree


@contextmanager
def open_h5(path: str, where: Optional[str] = None) -> Iterator[H5Tree]:
    """Open the HDF5 file ``path`` for reading and walk it (:func:`check_h5`) before anything is
    read. ``where`` names the file in errors (e.g. an archive member). The file must be a regular
    file: a FIFO or device is refused before it could block the open."""
    import h5py
    path = os.fspath(path)
    where = where or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"No such HDF5 file: {where}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        # Open the very file just checked (not whatever the name points to by now).
        source = f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else path
        try:
            f = h5py.File(source, "r")
        except (OSError, RuntimeError, ValueError) as e:
            raise CorruptCheckpointError(f"{where}: not a readable HDF5 file ({e})",
                                         path=where) from None
    finally:
        os.close(fd)
    with f:
        with h5_errors(where):
            tree = check_h5(f, where, st.st_size)
        yield tree


def read_str_list_attr(obj, key: str, where: str, limit: int = 100_000) -> List[str]:
    """A string-array attribute (``layer_names``, ``weight_names``), size-bounded; [] if absent."""
    if key not in obj.attrs:
        return []
    attr = obj.attrs.get_id(key)
    if attr.shape is None or len(attr.shape) > 1:
        raise CorruptCheckpointError(f"{where}: attribute {key!r} has shape {attr.shape}, expected "
                                     f"a list of names", path=where)
    count = int(np.prod(attr.shape)) if attr.shape else 1
    nbytes = attr.get_storage_size() if count else 0  # HDF5 reports 0 bytes as an error
    if nbytes > MAX_ATTR_BYTES:
        raise UnsafeFileError(f"{where}: attribute {key!r} holds {nbytes} bytes, the limit is "
                              f"{MAX_ATTR_BYTES}")
    if count > limit:
        raise UnsafeFileError(f"{where}: attribute {key!r} lists {count} names, the limit is {limit}")
    arr = np.asarray(obj.attrs[key])
    return [_attr_text(v, key, where) for v in arr.reshape(-1)]


def _attr_text(value, key: str, where: str) -> str:
    """One string of an attribute (str, or UTF-8 bytes), length-bounded."""
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", errors="strict")
    if not isinstance(value, str):
        raise CorruptCheckpointError(f"{where}: attribute {key!r} holds {type(value).__name__}, "
                                     f"expected a string", path=where)
    if len(value) > MAX_ATTR_BYTES:
        raise UnsafeFileError(f"{where}: attribute {key!r} holds a {len(value)}-character string, "
                              f"the limit is {MAX_ATTR_BYTES}")
    return value


@contextmanager
def h5_errors(where: str) -> Iterator[None]:
    """Errors h5py raises on damaged files (OSError, RuntimeError, KeyError, TypeError...) become
    ``CorruptCheckpointError``; fastckpt's own errors pass through unchanged."""
    try:
        yield
    except (FastckptError, NotImplementedError):
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, SystemError) as e:
        # TypeError: h5py's answer to a corrupted type message ("Unknown string encoding").
        raise CorruptCheckpointError(f"{where}: damaged HDF5 content ({type(e).__name__}: {e})",
                                     path=where) from None


def read_str_attr(obj, key: str, where: str) -> Optional[str]:
    """A scalar string attribute (vlen or fixed, str or bytes), size-bounded; None if absent."""
    if key not in obj.attrs:
        return None
    attr = obj.attrs.get_id(key)
    if attr.get_storage_size() > MAX_ATTR_BYTES:
        raise UnsafeFileError(f"{where}: attribute {key!r} holds {attr.get_storage_size()} bytes, "
                              f"the limit is {MAX_ATTR_BYTES}")
    value = obj.attrs[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return _attr_text(value, key, where)


def check_zip_member(info: zipfile.ZipInfo, where: str) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if (name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or "\x00" in name
            or posixpath.normpath(name.replace("\\", "/")).startswith("..")):
        raise UnsafeFileError(f"{where}: member {name!r} escapes the archive (absolute path or "
                              f"'..'); refused")
    if info.flag_bits & 0x1:
        raise UnsafeFileError(f"{where}: member {name!r} is encrypted; refused")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise UnsafeFileError(f"{where}: member {name!r} uses compression method "
                              f"{info.compress_type}; only stored (0) and deflated (8) are accepted")
    if info.file_size > MAX_ZIP_MEMBER_BYTES:
        raise UnsafeFileError(f"{where}: member {name!r} declares {info.file_size} bytes, the "
                              f"limit is {MAX_ZIP_MEMBER_BYTES}")
    if info.file_size > _SMALL and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        raise UnsafeFileError(f"{where}: member {name!r} expands {info.compress_size} bytes to "
                              f"{info.file_size}; refused as a decompression bomb")


def zip_directory_bounds(fp, where: str) -> Tuple[int, int]:
    """(entries, central directory bytes) from a ZIP's end record, found the way ``zipfile``
    finds it (last 22 bytes, else the last signature in the final 64 KiB; then the zip64 record
    just before it), and refused past ``MAX_ZIP_MEMBERS`` / ``MAX_ZIP_DIRECTORY_BYTES`` before
    ``zipfile`` reads and parses the directory (it builds an object per entry, whatever the end
    record's count says)."""
    fp.seek(0, 2)
    size = fp.tell()
    end = None
    if size >= 22:
        fp.seek(size - 22)
        tail = fp.read(22)
        if tail[:4] == b"PK\x05\x06" and tail[-2:] == b"\0\0":
            end, pos = tail, size - 22
    if end is None:
        start = max(size - 65536 - 22, 0)
        fp.seek(start)
        data = fp.read()
        i = data.rfind(b"PK\x05\x06")
        if i < 0 or len(data) - i < 22:
            raise CorruptCheckpointError(f"{where}: not a readable .keras (ZIP) archive (no end of "
                                         f"central directory record)", path=where)
        end, pos = data[i:i + 22], start + i
    entries, cd_size = struct.unpack("<10xHL", end[:16])
    if pos >= 20:
        fp.seek(pos - 20)
        locator = fp.read(20)
        if locator[:4] == b"PK\x06\x07" and pos >= 76:
            fp.seek(pos - 76)
            rec = fp.read(56)
            if rec[:4] == b"PK\x06\x06":
                entries, cd_size = struct.unpack("<32xQQ8x", rec[:56])
    if entries > MAX_ZIP_MEMBERS:
        raise UnsafeFileError(f"{where}: {entries} archive members, the limit is {MAX_ZIP_MEMBERS}")
    if cd_size > MAX_ZIP_DIRECTORY_BYTES:
        raise UnsafeFileError(f"{where}: a {cd_size}-byte central directory, the limit is "
                              f"{MAX_ZIP_DIRECTORY_BYTES} (at most {MAX_ZIP_MEMBERS} members)")
    return entries, cd_size


@contextmanager
def open_zip(path: str) -> Iterator[zipfile.ZipFile]:
    """``with open_zip(path) as zf:`` a ``ZipFile`` whose end record was bounded before ``zipfile``
    parsed the central directory, and whose members passed :func:`check_zip`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"No such file: {path}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as fp:
        zip_directory_bounds(fp, path)
        fp.seek(0)
        try:
            zf = zipfile.ZipFile(fp, "r")
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise CorruptCheckpointError(f"{path}: not a readable .keras (ZIP) archive ({e})",
                                         path=path) from None
        with zf:
            check_zip(zf, path)
            yield zf


def check_zip(zf: zipfile.ZipFile, where: str) -> None:
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise UnsafeFileError(f"{where}: {len(infos)} archive members, the limit is {MAX_ZIP_MEMBERS}")
    seen = set()
    for info in infos:
        check_zip_member(info, where)
        if info.filename in seen:
            raise UnsafeFileError(f"{where}: member {info.filename!r} appears twice; refused "
                                  f"(which copy a reader sees is ambiguous)")
        seen.add(info.filename)
