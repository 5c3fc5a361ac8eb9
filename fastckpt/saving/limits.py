"""Bounds every whole-model loader enforces before it trusts a byte of a file.

A Keras file is data from somewhere else. Each check below turns a hostile or broken file into a
typed error (``UnsafeFileError`` for "refused on principle", ``CorruptCheckpointError`` for "not
what the format allows") before anything is allocated on the file's say-so: JSON is size- and
depth-bounded, HDF5 trees are walked with a cap on objects and links, every dataset's declared
size is compared with the bytes actually stored (no "shape bomb"), and ZIP members are checked
for path traversal, odd compression and decompression bombs.

The numbers are module constants so an application with unusual models can raise them.
"""

from __future__ import annotations

import json
import posixpath
import zipfile
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from fastckpt.errors import CorruptCheckpointError, FastckptError, UnsafeFileError

__all__ = [
    "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_LAYERS", "MAX_RANK", "MAX_DIM", "MAX_PARAMS",
    "MAX_TENSOR_BYTES", "MAX_ATTR_BYTES", "MAX_H5_OBJECTS", "MAX_STORAGE_RATIO",
    "MAX_ZIP_MEMBERS", "MAX_ZIP_MEMBER_BYTES", "MAX_ZIP_RATIO",
    "load_json", "check_json_depth", "check_shape", "check_dataset", "check_h5_tree", "h5_errors",
    "read_str_attr", "check_zip", "check_zip_member",
]

MAX_JSON_BYTES = 32 * 2**20      # a 10 000-layer config is ~5 MiB
MAX_JSON_DEPTH = 64              # Keras configs nest ~6 deep
MAX_LAYERS = 10_000
MAX_RANK = 32                    # HDF5's own limit; TF allows 254 but no Keras weight has > 8
MAX_DIM = 2**31 - 1
MAX_PARAMS = 2**33               # elements a config may ask us to allocate (32 GiB of float32)
MAX_TENSOR_BYTES = 2**36
MAX_ATTR_BYTES = MAX_JSON_BYTES
MAX_H5_OBJECTS = 1_000_000
MAX_STORAGE_RATIO = 100          # declared bytes / stored bytes, beyond 1 MiB (Keras uses 100 too)
MAX_ZIP_MEMBERS = 10_000
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


def load_json(raw, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """Parse ``raw`` (str or bytes) as JSON after checking its size, depth and encoding."""
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    if isinstance(raw, (bytes, bytearray, np.bytes_)):
        if len(raw) > limit:
            raise UnsafeFileError(f"{what}: {len(raw)} bytes of JSON, the limit is {limit}")
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorruptCheckpointError(f"{what}: expected UTF-8 JSON, got undecodable bytes ({e})")
    if not isinstance(raw, str):
        raise CorruptCheckpointError(f"{what}: expected a JSON string, got {type(raw).__name__}")
    if len(raw) > limit:
        raise UnsafeFileError(f"{what}: {len(raw)} characters of JSON, the limit is {limit}")
    try:
        # parse_constant refuses NaN/Infinity: not JSON, and never in a config we write.
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise UnsafeFileError(f"{what}: JSON nested too deeply to parse") from None
    except ValueError as e:
        raise CorruptCheckpointError(f"{what}: expected valid JSON, got a parse error: {e}") from None
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
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d <= MAX_DIM:
            raise CorruptCheckpointError(f"{what}: expected dimensions in [0, {MAX_DIM}]"
                                         f"{' or null' if allow_none else ''}, got {shape!r:.200}")
        out.append(int(d))
    return tuple(out)


def check_dataset(ds, where: str) -> None:
    """Refuse external/virtual storage, non-numeric types and declared sizes the file cannot back."""
    name = ds.name
    if ds.dtype.kind not in "fiub" or ds.dtype.fields is not None:
        raise CorruptCheckpointError(f"{where}: dataset {name} has dtype {ds.dtype}, expected a "
                                     f"numeric or bool array", path=where, tensor=name)
    if ds.is_virtual or ds.external:
        raise UnsafeFileError(f"{where}: dataset {name} reads from other files (virtual or "
                              f"external storage); refused")
    if len(ds.shape) > MAX_RANK:
        raise UnsafeFileError(f"{where}: dataset {name} has rank {len(ds.shape)} > {MAX_RANK}")
    nbytes = int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize
    if nbytes > MAX_TENSOR_BYTES:
        raise UnsafeFileError(f"{where}: dataset {name} declares {nbytes} bytes, the limit is "
                              f"{MAX_TENSOR_BYTES}")
    stored = ds.id.get_storage_size()
    if nbytes > _SMALL and stored * MAX_STORAGE_RATIO < nbytes:
        raise UnsafeFileError(f"{where}: dataset {name} declares shape {ds.shape} ({nbytes} "
                              f"bytes) but stores only {stored} bytes; refused as a shape bomb")


def check_h5_tree(root, where: str) -> None:
    """Walk every link under ``root``: only hard links, a bounded count, datasets checked."""
    import h5py
    links = []

    def visit(name, link):
        # Collect only: an exception raised inside h5py's visitor is mangled into SystemError.
        links.append((name, link))
        return True if len(links) > MAX_H5_OBJECTS else None

    root.visititems_links(visit)
    if len(links) > MAX_H5_OBJECTS:
        raise UnsafeFileError(f"{where}: more than {MAX_H5_OBJECTS} HDF5 objects")
    for name, link in links:
        if not isinstance(link, h5py.HardLink):
            raise UnsafeFileError(f"{where}: {name} is a {type(link).__name__} link; only plain "
                                  f"groups and datasets are accepted (no soft or external links)")
        obj = root[name]
        if isinstance(obj, h5py.Dataset):
            check_dataset(obj, where)


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
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", errors="strict")
    if not isinstance(value, str):
        raise CorruptCheckpointError(f"{where}: attribute {key!r} should be a string, got "
                                     f"{type(value).__name__}", path=where)
    if len(value) > MAX_ATTR_BYTES:
        raise UnsafeFileError(f"{where}: attribute {key!r} is {len(value)} characters long, the "
                              f"limit is {MAX_ATTR_BYTES}")
    return value


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
