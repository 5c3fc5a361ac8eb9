"""The one check every path a user hands to a save or a load goes through."""

from __future__ import annotations

import os
from typing import Any

from fastckpt.errors import InvalidPathError

__all__ = ["fspath"]


def fspath(path: Any, what: str = "path") -> str:
    """``path`` as ``str``. ``bytes`` and non-UTF-8 names (surrogate-escaped ``str``, as
    ``os.listdir`` returns them) are accepted: they name files like any other. A value that is not
    a path raises ``TypeError``; a NUL character, which no file name can hold, raises
    ``InvalidPathError`` naming the argument, instead of the OS layer's bare ``ValueError``."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"Expected {what} to be a str, bytes or os.PathLike, got "
                        f"{type(path).__name__}")
    p = os.fspath(path)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if "\0" in p:
        raise InvalidPathError(f"Expected {what} without NUL characters, got {p!r}", p)
    return p
