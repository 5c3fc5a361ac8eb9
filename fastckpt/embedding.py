"""Where the C/C++ embedding files of this installation are: libfastckpt, its headers, its CMake
package. ``python -m fastckpt --cmake-dir`` prints ``cmake_dir()`` for a downstream build::

    cmake -S . -B build -Dfastckpt_DIR=$(python -m fastckpt --cmake-dir)

They are installed next to the ``_core`` extension (``<site-packages>/fastckpt/{lib,include}``),
which is found without importing it, so these work even where the extension cannot load.
"""

from __future__ import annotations

import importlib.util
import os

__all__ = ["package_dir", "include_dir", "lib_dir", "cmake_dir"]


def package_dir() -> str:
    """The directory holding the compiled parts (for editable installs, not the source tree)."""
    spec = importlib.util.find_spec("fastckpt._core")
    if spec is None or not spec.origin:
        raise FileNotFoundError("fastckpt's compiled extension is not installed; reinstall fastckpt")
    return os.path.dirname(os.path.abspath(spec.origin))


def _existing(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Expected the fastckpt {what} at {path}, but it is not there: this "
                                f"build was made with FASTCKPT_EMBED=OFF; reinstall fastckpt with it on")
    return path


def include_dir() -> str:
    """The directory to add to the include path (``#include <fastckpt/fastckpt.h>``)."""
    return _existing(os.path.join(package_dir(), "include"), "C/C++ headers")


def lib_dir() -> str:
    """The directory holding ``libfastckpt.so``."""
    return _existing(os.path.join(package_dir(), "lib"), "embedding library")


def cmake_dir() -> str:
    """The directory holding ``fastckptConfig.cmake`` (pass it as ``fastckpt_DIR``)."""
    return _existing(os.path.join(package_dir(), "lib", "cmake", "fastckpt"), "CMake package")
