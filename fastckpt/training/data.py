"""Input preparation and batching for the training loop: argument checks, ``x``/``y`` to checked
contiguous arrays, the validation split and the per-epoch shuffle order."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from fastckpt import backend, losses as losses_mod
from fastckpt.checks import is_int

__all__ = ["check_batch_size", "reject_unknown", "verbosity", "prepare_x", "model_inputs",
           "prepare_y", "validation_arrays", "epoch_order", "batch"]


def check_batch_size(batch_size) -> int:
    if batch_size is None:
        return 32
    if not is_int(batch_size):
        raise TypeError(f"Expected an integer batch_size, got {batch_size!r}")
    if batch_size <= 0:
        raise ValueError(f"Expected batch_size > 0, got {batch_size}")
    return int(batch_size)


def reject_unknown(what: str, kwargs: dict) -> None:
    """Keras' data-pipeline knobs do nothing here and are accepted; anything else is a typo."""
    for k in ("max_queue_size", "workers", "use_multiprocessing"):
        kwargs.pop(k, None)
    if kwargs:
        raise TypeError(f"{what}: unexpected keyword argument(s) {sorted(kwargs)}")


def verbosity(verbose) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"Expected verbose in 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


def prepare_x(model, x, what: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous float32 array, checked against the model's input shape if built."""
    if x is None:
        raise ValueError(f"Expected input data {what}, got None")
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"Expected {what} to be a numeric array, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"Expected {what} of rank >= 2 (samples, features...), got shape {arr.shape}")
    if model.built:
        want = model.input_shape
        if arr.ndim != len(want):
            raise ValueError(f"Model {model.name!r} expects input of rank {len(want)} "
                             f"(shape {want}), got {what} of shape {arr.shape}")
        for got, exp in zip(arr.shape[1:], want[1:]):
            if exp is not None and got != exp:
                raise ValueError(f"Model {model.name!r} expects {what} with shape "
                                 f"{tuple(want)}, got {arr.shape}: feature count {got} != {exp}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def model_inputs(model, x, what: str = "x") -> np.ndarray:
    """Checked float32 inputs; an unbuilt model is built from their shape first."""
    xa = prepare_x(model, x, what)
    model._ensure_built((None,) + xa.shape[1:])
    return prepare_x(model, xa, what)


def prepare_y(model, y, n: int, what: str = "y") -> np.ndarray:
    """``y`` as int32 class labels for ``n`` samples and the model's output width."""
    if y is None:
        raise ValueError(f"Expected targets {what}, got None")
    arr = np.asarray(y)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"Expected {what} to be numeric class labels, got dtype {arr.dtype}")
    if arr.shape[:1] != (n,):
        raise ValueError(f"Data cardinality is ambiguous: x has {n} samples but {what} has "
                         f"{arr.shape[0] if arr.ndim else 'no'} samples. Make sure all arrays "
                         f"contain the same number of samples.")
    n_classes = model.output_shape[-1]
    return losses_mod._labels(arr, n, n_classes, what)


def validation_arrays(model, xa: np.ndarray, ya: np.ndarray, validation_data,
                      validation_split: float):
    """``(xa, ya, val)``: the training arrays (less a split-off tail) and the validation pair or
    ``None``."""
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("Expected validation_data=(x_val, y_val), got "
                             f"{type(validation_data).__name__}")
        vx = prepare_x(model, validation_data[0], "validation_data[0]")
        val = (vx, prepare_y(model, validation_data[1], vx.shape[0], "validation_data[1]"))
    elif validation_split:
        split = int(xa.shape[0] * (1.0 - float(validation_split)))
        val = (xa[split:], ya[split:])
        xa, ya = xa[:split], ya[:split]
    return xa, ya, val


def epoch_order(model, n: int, shuffle: bool) -> Optional[np.ndarray]:
    """This epoch's sample order, or ``None`` for the given order. The state (seed, epochs drawn)
    is the model's, saved with it so that a resumed run draws the same orders."""
    if not shuffle:
        return None
    if model._shuffle_seed is None:
        model._shuffle_seed = backend.next_seed()
    # One generator per epoch from (seed, epoch index): resuming needs only these two ints.
    rng = np.random.default_rng([model._shuffle_seed, model._shuffle_epochs_drawn])
    model._shuffle_epochs_drawn += 1
    return rng.permutation(n)


def batch(xa: np.ndarray, ya: np.ndarray, order: Optional[np.ndarray], lo: int, hi: int,
          xbuf: np.ndarray, ybuf: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rows ``lo:hi`` of the epoch: views in order, or gathered into the reusable buffers."""
    if order is None:
        return xa[lo:hi], ya[lo:hi]
    idx = order[lo:hi]
    return (np.take(xa, idx, axis=0, out=xbuf[: hi - lo]),
            np.take(ya, idx, axis=0, out=ybuf[: hi - lo]))
