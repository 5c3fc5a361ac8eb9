"""The only module that talks to the native core (``fastckpt._core``).

Everything here takes NumPy arrays that the caller has already validated (shape, dtype and
contiguity are asserted once more here because a wrong buffer in C++ is undefined behaviour, not an
exception). Every call releases the GIL inside the native code.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fastckpt._loader import preload_blas


def _unbuilt_tree_error() -> Optional[ImportError]:
    """The error to raise when ``fastckpt`` was imported from a source tree that has no compiled
    ``_core`` (a fresh checkout, with Python started in its root: the current directory comes
    first on ``sys.path`` and shadows any installed copy). None when ``_core`` exists but failed
    to load: that error is the one to show."""
    import importlib.machinery
    import importlib.util
    import os
    import sys
    if importlib.util.find_spec("fastckpt._core") is not None:
        return None
    pkg = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.dirname(pkg)
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != tree]
    installed = importlib.machinery.PathFinder.find_spec("fastckpt", others)
    where = (f"An installed fastckpt is at {os.path.dirname(installed.origin)}, hidden by this tree "
             f"because the current directory comes first on sys.path. "
             if installed is not None and installed.origin else "")
    return ImportError(
        f"fastckpt was imported from {pkg}, a source tree without its compiled extension "
        f"(fastckpt._core). {where}Build and install it with `pip install .` in {tree} (or "
        f"`pip install -e .` to develop), then run Python from another directory (or, on "
        f"Python 3.11+, set PYTHONSAFEPATH=1), so that ./fastckpt does not shadow the installed package.",
        name="fastckpt._core")


preload_blas()
try:
    from fastckpt import _core  # noqa: E402
except ImportError:
    _error = _unbuilt_tree_error()
    if _error is None:
        raise
    raise _error from None

__all__ = [
    "ACTIVATIONS",
    "dense_forward",
    "dense_backward",
    "inference_pass_rows",
    "activation_forward",
    "activation_backward",
    "dropout_forward",
    "dropout_backward",
    "sparse_ce",
    "sparse_accuracy_count",
    "adam_update",
    "sgd_update",
    "gemm",
    "make_trainer",
    "num_threads",
    "set_num_threads",
    "build_info",
]

#: Activation names the native kernels fuse, and their codes (from the extension: kernels/dense.h).
ACTIVATIONS = dict(_core.activations)


def _act_code(activation: str) -> int:
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(f"Expected activation to be one of {sorted(ACTIVATIONS)}, got "
                         f"{activation!r}") from None


def _f32(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        raise TypeError(f"{name}: expected a C-contiguous float32 array, got {a.dtype} "
                        f"(contiguous={a.flags.c_contiguous})")
    return a


def dense_forward(x: np.ndarray, kernel: np.ndarray, bias: Optional[np.ndarray], out: np.ndarray,
                  activation: str) -> np.ndarray:
    m, k = x.shape
    k2, n = kernel.shape
    if k != k2 or out.shape != (m, n):
        raise ValueError(f"dense_forward: x {x.shape}, kernel {kernel.shape}, out {out.shape} do not fit")
    _core.dense_forward(_f32(x, "x"), _f32(kernel, "kernel"), bias, _f32(out, "out"), m, k, n,
                        _act_code(activation))
    return out


def inference_pass_rows(batch_size: int) -> int:
    """Rows per forward pass of predict/evaluate without per-batch hooks: whole batches, at least
    256 rows (the rule every inference path, the C++ runtime included, shares; see dense.h)."""
    return _core.inference_pass_rows(int(batch_size))


def dense_backward(x, kernel, y, dy, dz, d_kernel, d_bias, dx, activation: str,
                   accumulate: bool = False) -> None:
    m, k = x.shape
    n = kernel.shape[1]
    if y.shape != (m, n) or dy.shape != (m, n) or d_kernel.shape != kernel.shape:
        raise ValueError("dense_backward: inconsistent shapes")
    _core.dense_backward(x, kernel, y, dy, dz, d_kernel, d_bias, dx, m, k, n,
                         _act_code(activation), accumulate)


def activation_forward(activation: str, z: np.ndarray) -> np.ndarray:
    z2 = z.reshape(-1, z.shape[-1]) if z.ndim != 2 else z
    _core.activation_forward(_act_code(activation), _f32(z2, "z"), z2.shape[0], z2.shape[1])
    return z


def activation_backward(activation: str, y: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
    cols = y.shape[-1]
    rows = y.size // cols if cols else 0
    _core.activation_backward(_act_code(activation), y, dy, dz, rows, cols)
    return dz


def dropout_forward(x, y, mask, rate: float, seed: int, offset: int) -> None:
    _core.dropout_forward(x, y, mask, float(rate), int(seed), int(offset))


def dropout_backward(dy, mask, dx, rate: float) -> None:
    _core.dropout_backward(dy, mask, dx, float(rate))


def sparse_ce(pred, labels, from_logits: bool, epsilon: float, losses=None, grad=None,
              grad_scale: float = 1.0):
    """Returns ``(correct count, sum of per-sample losses as a double)``."""
    m, n = pred.shape
    return _core.sparse_ce(pred, labels, m, n, bool(from_logits), float(epsilon), losses, grad,
                           float(grad_scale))


def sparse_accuracy_count(pred, labels) -> int:
    m, n = pred.shape
    return _core.sparse_accuracy_count(pred, labels, m, n)


def adam_update(var, grad, m, v, vhat, lr, beta_1, beta_2, epsilon, amsgrad, step) -> None:
    _core.adam_update(var, grad, m, v, vhat, float(lr), float(beta_1), float(beta_2), float(epsilon),
                      bool(amsgrad), int(step))


def sgd_update(var, grad, momentum_buf, lr, momentum, nesterov) -> None:
    _core.sgd_update(var, grad, momentum_buf, float(lr), float(momentum), bool(nesterov))


def make_trainer(layers, variables, optimizer, from_logits: bool, epsilon: float, input_width: int):
    """The fused training loop over the given buffers (see ``fastckpt.training.fused``)."""
    return _core.Trainer(layers, variables, optimizer, bool(from_logits), float(epsilon),
                         int(input_width))


def gemm(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None, trans_a: bool = False,
         trans_b: bool = False, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    n = b.shape[0] if trans_b else b.shape[1]
    if out is None:
        out = np.zeros((m, n), np.float32)
    _core.gemm(trans_a, trans_b, m, n, k, float(alpha), _f32(a, "a"), _f32(b, "b"), float(beta),
               _f32(out, "out"))
    return out


def num_threads() -> int:
    return _core.num_threads()


def set_num_threads(n: int) -> None:
    if int(n) < 1:
        raise ValueError(f"Expected a thread count >= 1, got {n}")
    _core.set_num_threads(int(n))


def build_info() -> dict:
    return dict(_core.build_info())


# ---------------------------------------------------------------------------------------------
# Checkpoint format codec (csrc/io). Callers (fastckpt.checkpoint.bundle) validate first; these
# wrappers only pass arguments through. Native errors arrive as fastckpt.errors types.
# ---------------------------------------------------------------------------------------------

__all__ += [
    "crc32c",
    "crc32c_parallel",
    "crc32c_combine",
    "crc32c_hardware_available",
    "crc_mask",
    "crc_unmask",
    "table_build",
    "table_read",
    "bundle_write",
    "staged_bundle",
    "bundle_open",
    "bundle_delete",
    "bundle_recover",
    "atomic_write_file",
    "BUNDLE_LIMITS",
    "PLAN_FORMAT",
]

#: Limits the bundle reader enforces (see docs/format.md).
BUNDLE_LIMITS = dict(_core.bundle_limits)

#: The inference plan's checkpoint key, header and the limits the C++ runtime enforces
#: (fastckpt/format.h; see docs/format.md, "Inference plan").
PLAN_FORMAT = dict(_core.plan_format)


def crc32c(data, crc: int = 0, impl: str = "auto") -> int:
    """CRC-32C of a bytes-like object, continuing ``crc``; ``impl`` is auto|hardware|portable."""
    return _core.crc32c(data, crc, impl)


def crc32c_parallel(data, crc: int = 0, threads: int = 2) -> int:
    return _core.crc32c_parallel(data, crc, threads)


def crc32c_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    return _core.crc32c_combine(crc_a, crc_b, len_b)


def crc32c_hardware_available() -> bool:
    return _core.crc32c_hardware_available()


def crc_mask(crc: int) -> int:
    return _core.crc_mask(crc)


def crc_unmask(masked: int) -> int:
    return _core.crc_unmask(masked)


def table_build(entries: list) -> bytes:
    """A LevelDB-style table (the .index container) from sorted (key, value) byte pairs."""
    return _core.table_build(entries)


def table_read(data: bytes, path: str = "<bytes>") -> list:
    return _core.table_read(data, path)


def bundle_write(prefix: str, tensors: list, num_shards: int, fsync: bool, use_mmap: bool = False,
                 threads: Optional[int] = None) -> None:
    """tensors: [(key bytes, tf dtype int, shape list, C-contiguous buffer | list of bytes)].

    Data goes out with pwrite straight from the given buffers, CRCs computed beside the writes
    (``use_mmap=True`` writes through a mapping of the new file instead). Measured on 512 MB:
    pwrite 4.1 GB/s median vs 2.4 GB/s mapped and 1.2-4.1 GB/s for a raw ``write`` loop in the
    same runs: a fresh mapping pays a page fault and zero-fill per 4 KiB."""
    n = num_threads() if threads is None else max(1, int(threads))
    _core.bundle_write(prefix, tensors, num_shards, fsync, n, use_mmap)


def staged_bundle():
    """A reusable single-shard snapshot: ``.stage(tensors, num_threads)`` copies the tuples'
    buffers (as for bundle_write) into a page-aligned image, CRCs in the same pass;
    ``.write(prefix, durable)`` commits it (O_DIRECT when durable)."""
    return _core.StagedBundle()


def bundle_open(prefix: str):
    return _core.BundleReader(prefix)


def bundle_delete(prefix: str, fsync: bool = True) -> None:
    _core.bundle_delete(prefix, fsync)


def bundle_recover(prefix: str, fsync: bool = True) -> bool:
    return _core.bundle_recover(prefix, fsync)


def atomic_write_file(path: str, data: bytes, fsync: bool = True) -> None:
    _core.atomic_write_file(path, data, fsync)


# ==============================================================================================
# Topic sections. Each topic's wrappers go under its own header (and extend __all__ there), so
# work on one topic never edits the lines of another.
# ==============================================================================================

# ----------------------------------------------------------------------------------------------
# Section: regularizer kernels (weight penalties) -- bind_regularizer_kernels.cpp
# ----------------------------------------------------------------------------------------------
__all__ += ["l1l2_penalty", "l1l2_add_gradient"]


def l1l2_penalty(x: np.ndarray, l1: float, l2: float) -> float:
    """``l1 * sum(|x|) + l2 * sum(x**2)`` of a C-contiguous float32 array (double accumulation)."""
    return float(_core.l1l2_penalty(_f32(x, "x"), float(l1), float(l2)))


def l1l2_add_gradient(x: np.ndarray, grad: np.ndarray, l1: float, l2: float) -> None:
    """``grad += l1 * sign(x) + 2 * l2 * x`` in place; both C-contiguous float32, same shape."""
    if grad.shape != x.shape:
        raise ValueError(f"l1l2_add_gradient: grad has shape {grad.shape}, x has {x.shape}")
    if np.may_share_memory(x, grad):
        raise ValueError("l1l2_add_gradient: grad must not overlap x")
    _core.l1l2_add_gradient(_f32(x, "x"), _f32(grad, "grad"), float(l1), float(l2))


# ----------------------------------------------------------------------------------------------
# Section: layer kernels (activations, shape, merge, noise layers) -- bind_layer_kernels.cpp
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Section: normalization, embedding and pooling kernels -- bind_norm_kernels.cpp
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Section: loss kernels -- bind_loss_kernels.cpp
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Section: optimizer kernels -- bind_optim_kernels.cpp
# ----------------------------------------------------------------------------------------------
