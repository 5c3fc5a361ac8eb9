"""Build and runtime configuration: ``show_config()``, thread count."""

from __future__ import annotations

import os
import sys

from fastckpt import ops
from fastckpt.version import VERSION

__all__ = ["show_config", "get_config", "set_num_threads", "get_num_threads"]


def get_num_threads() -> int:
    """Threads fastckpt's kernels use (BLAS is always called single-threaded per thread)."""
    return ops.num_threads()


def set_num_threads(n: int) -> None:
    """Set the kernel thread count (also settable before import with FASTCKPT_NUM_THREADS)."""
    ops.set_num_threads(n)


def _packed(info: dict) -> str:
    if not info.get("blas_packed_b_available"):
        return "not available with this BLAS"
    if info.get("blas_packed_b"):
        return "on (predict passes of Dense chains)"
    return "off (FASTCKPT_PACKED_GEMM=1 turns it on for predict)"


def get_config() -> dict:
    info = ops.build_info()
    return {
        "version": VERSION,
        "python": sys.version.split()[0],
        "blas": info["blas"],
        "blas_config": info["blas_config"],
        "openmp": info["openmp"],
        "threads": ops.num_threads(),
        "blas_threads_per_call": 1,
        "blas_packed_weights": _packed(info),
        "compiler": info["compiler"],
        "FASTCKPT_NUM_THREADS": os.environ.get("FASTCKPT_NUM_THREADS"),
    }


def show_config() -> None:
    """Print the version, BLAS, OpenMP, thread counts and compiler."""
    for key, value in get_config().items():
        print(f"{key:>22}: {value}")
