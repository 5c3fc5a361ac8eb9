"""Typed errors. Every message says what was expected and what was received."""

from __future__ import annotations

__all__ = [
    "FastckptError",
    "CheckpointError",
    "CorruptCheckpointError",
    "CheckpointNotFoundError",
    "CheckpointMismatchError",
    "UnsafeFileError",
    "UnknownObjectError",
    "UnsupportedDtypeError",
    "InvalidPathError",
]


class FastckptError(Exception):
    """Base class of every error fastckpt raises on its own account."""


class CheckpointError(FastckptError):
    """A checkpoint could not be written or read."""


class CorruptCheckpointError(CheckpointError, ValueError):
    """A checkpoint file's bytes are not what the format allows (bad magic, CRC, offsets, sizes).

    Attributes name what is known: ``path`` (the file), ``tensor`` (the key) and ``offset``.
    """

    def __init__(self, message: str, path: str | None = None, tensor: str | None = None,
                 offset: int | None = None):
        super().__init__(message)
        self.path = path
        self.tensor = tensor
        self.offset = offset


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the given prefix or directory."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint does not match the model: lists missing, unexpected and mis-shaped values."""


class UnsafeFileError(FastckptError, ValueError):
    """A file asks for something fastckpt refuses to do on load (run code, exceed a size limit)."""


class UnknownObjectError(FastckptError, ValueError):
    """A saved config names a class that is neither built in nor provided by the caller."""


class UnsupportedDtypeError(CorruptCheckpointError, TypeError):
    """A checkpoint holds a tensor whose dtype fastckpt cannot represent. Besides ``path`` and
    ``tensor``, ``dtype`` is the TensorFlow DataType number. (A CorruptCheckpointError, so callers
    that refuse unreadable checkpoints catch it too.)"""

    def __init__(self, message: str, path: str | None = None, tensor: str | None = None,
                 dtype: int | None = None):
        super().__init__(message, path=path, tensor=tensor)
        self.dtype = dtype


class InvalidPathError(FastckptError, ValueError):
    """A path that no file can have (a NUL character in it); ``path`` is the path as given."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path
