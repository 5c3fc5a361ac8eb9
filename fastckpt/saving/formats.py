"""Which file format a path holds: the file-name suffixes and magic bytes, written once."""

from __future__ import annotations

from typing import Optional

from fastckpt.checkpoint.bundle import read_small_file

__all__ = ["H5_MAGIC", "ZIP_MAGIC", "H5_SUFFIXES", "KERAS_SUFFIX", "FILE_SUFFIXES",
           "suffix_format", "sniff_format"]

#: The 8-byte HDF5 superblock signature (an .h5 file at offset 0).
H5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: A zip archive (a Keras 3 .keras file) starts with a local file header, "PK".
ZIP_MAGIC = b"PK"
H5_SUFFIXES = (".h5", ".hdf5")
KERAS_SUFFIX = ".keras"
#: Suffixes of the single-file formats; any other path is a checkpoint prefix or a directory.
FILE_SUFFIXES = H5_SUFFIXES + (KERAS_SUFFIX,)


def suffix_format(path: str) -> Optional[str]:
    """``'keras'``, ``'h5'`` or ``None`` from the file name alone."""
    if path.endswith(KERAS_SUFFIX):
        return "keras"
    if path.endswith(H5_SUFFIXES):
        return "h5"
    return None


def sniff_format(path: str) -> Optional[str]:
    """``'keras'``, ``'h5'`` or ``None`` from the file's first bytes (a FIFO or device under the
    name raises ``OSError``, as ``read_small_file`` does)."""
    magic = read_small_file(path, len(H5_MAGIC) - 1)
    if magic.startswith(ZIP_MAGIC):
        return "keras"
    if magic == H5_MAGIC:
        return "h5"
    return None
