"""Makes the BLAS library that ``_core`` links against loadable before ``_core`` is imported.

The extension carries an RPATH to ``site-packages/scipy_openblas32/lib``; importing the
``scipy_openblas32`` package and loading its library with RTLD_GLOBAL also covers layouts where
that relative path does not hold (editable installs, unusual prefixes).
"""

import ctypes
import os


def preload_blas() -> None:
    try:
        import scipy_openblas32
    except ImportError:  # built against a system BLAS
        return
    lib_dir = scipy_openblas32.get_lib_dir()
    for name in os.listdir(lib_dir):
        if name.startswith("libscipy_openblas") and ".so" in name:
            ctypes.CDLL(os.path.join(lib_dir, name), mode=ctypes.RTLD_GLOBAL)
            return
