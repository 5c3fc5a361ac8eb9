"""Losses, shaped like ``tf.keras.losses``. Sparse categorical cross-entropy runs natively,
forward and backward fused."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import numpy as np

from fastckpt import ops

__all__ = ["Loss", "SparseCategoricalCrossentropy", "sparse_categorical_crossentropy", "get",
           "serialize", "deserialize"]

EPSILON = 1e-7


def _labels(y_true, n_rows: int, n_classes: int, what: str = "y_true") -> np.ndarray:
    """Sparse labels as contiguous int32, checked in their own dtype first: a cast before the
    range check would wrap an int64 2**32+1 or a uint64 2**63 onto a valid class."""
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n_rows:
        raise ValueError(f"Expected {what} as sparse labels of shape ({n_rows},) or ({n_rows}, 1), "
                         f"got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(f"Expected {what} to be numeric class labels, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        frac = np.flatnonzero(~np.isfinite(y) | (y != np.floor(np.where(np.isfinite(y), y, 0))))
        if frac.size:
            i = int(frac[0])
            raise ValueError(f"Expected integer class labels in {what}, got the non-integral value "
                             f"{y[i]!r} at index {i}")
    # Compared in the labels' own dtype (NumPy compares mixed signed/unsigned ints exactly).
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        i = int(bad[0])
        value = y[i].item()
        raise ValueError(f"Received a label value of {value} (index {i} of {what}) which is outside "
                         f"the valid range of [0, {n_classes})")
    return np.ascontiguousarray(y, dtype=np.int32)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits: bool = False, axis: int = -1) -> np.ndarray:
    """Per-sample loss, as ``tf.keras.losses.sparse_categorical_crossentropy``."""
    pred = np.ascontiguousarray(y_pred, np.float32)
    if pred.ndim != 2:
        raise ValueError(f"Expected predictions of shape (batch, classes), got {pred.shape}")
    labels = _labels(y_true, pred.shape[0], pred.shape[1])
    out = np.empty(pred.shape[0], np.float32)
    ops.sparse_ce(pred, labels, from_logits, EPSILON, losses=out)
    return out


class Loss:
    """Base class: ``loss(y_true, y_pred)`` returns the mean over the batch."""

    def __init__(self, reduction: str = "auto", name: Optional[str] = None):
        if reduction not in ("auto", "sum_over_batch_size", "sum", "none"):
            raise ValueError(f"Expected reduction in auto/sum_over_batch_size/sum/none, got {reduction!r}")
        self.reduction = reduction
        self.name = name

    #: The output activation this loss can take over when the model's output layer applies it
    #: (the Trainer then feeds it that layer's pre-activation values, as tf.keras does): "softmax"
    #: for the categorical cross-entropies, "sigmoid" for the binary ones, None otherwise.
    foldable_activation: Optional[str] = None

    def call(self, y_true, y_pred) -> np.ndarray:
        raise NotImplementedError

    # --- the training protocol (the Trainer's only way to use a loss) ---------------------------
    def _prepare_targets(self, y, n: int, output_shape, what: str = "y") -> np.ndarray:
        """``y`` for ``n`` rows of an output of shape ``output_shape`` (batch dim first), checked
        once per ``fit``/``evaluate`` call and converted to what ``_fwd_bwd`` takes."""
        arr = np.asarray(y)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"Expected {what} to be numeric, got dtype {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _fwd_bwd(self, y_true: np.ndarray, y_pred: np.ndarray, sample_weight: Optional[np.ndarray],
                 grad: Optional[np.ndarray], grad_scale: float, logits: bool) -> float:
        """One batch: returns the sum over its rows of ``sample_weight * per-sample loss`` (a
        Python float, accumulated in double). With ``grad`` (shape of ``y_pred``, float32), also
        writes ``grad_scale`` times the derivative of that sum w.r.t. ``y_pred``. ``logits``:
        ``y_pred`` holds the pre-activation values of ``foldable_activation``."""
        if grad is not None or logits:
            raise NotImplementedError(f"{type(self).__name__} has no gradient kernel")
        per = np.asarray(self.call(y_true, y_pred), np.float64).reshape(len(y_pred), -1).mean(axis=1)
        if sample_weight is not None:
            per = per * np.asarray(sample_weight, np.float64).reshape(per.shape)
        return float(per.sum())

    def __call__(self, y_true, y_pred, sample_weight=None):
        per = self.call(y_true, y_pred)
        if sample_weight is not None:
            per = per * np.asarray(sample_weight, np.float32).reshape(per.shape)
        if self.reduction == "none":
            return per
        if self.reduction == "sum":
            return np.float32(per.sum())
        return np.float32(per.mean()) if per.size else np.float32(0.0)

    def get_config(self) -> Dict[str, Any]:
        return {"reduction": self.reduction, "name": self.name}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Loss":
        return cls(**config)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy between integer labels and class scores (``from_logits``) or probabilities.

    Example:
        >>> import numpy as np
        >>> loss = SparseCategoricalCrossentropy(from_logits=True)
        >>> round(float(loss([0], np.array([[0.0, 0.0]], np.float32))), 4)
        0.6931
    """

    def __init__(self, from_logits: bool = False, ignore_class=None, reduction: str = "auto",
                 name: str = "sparse_categorical_crossentropy", **kwargs):
        kwargs.pop("axis", None)
        # tf_keras' serialized config names the wrapped function; it can only be this one.
        if kwargs.get("fn", "sparse_categorical_crossentropy") == "sparse_categorical_crossentropy":
            kwargs.pop("fn", None)
        if kwargs:
            raise TypeError(f"SparseCategoricalCrossentropy: unexpected argument(s) {sorted(kwargs)}")
        if ignore_class is not None:
            raise NotImplementedError("ignore_class is not supported yet")
        super().__init__(reduction=reduction, name=name)
        self.from_logits = bool(from_logits)

    foldable_activation = "softmax"

    def call(self, y_true, y_pred):
        return sparse_categorical_crossentropy(y_true, y_pred, from_logits=self.from_logits)

    def _prepare_targets(self, y, n: int, output_shape, what: str = "y") -> np.ndarray:
        return _labels(y, n, output_shape[-1], what)

    def _fwd_bwd(self, y_true, y_pred, sample_weight, grad, grad_scale, logits):
        if sample_weight is not None:
            raise NotImplementedError("sample_weight is not supported yet")
        _, total = ops.sparse_ce(y_pred, y_true, logits or self.from_logits, EPSILON, grad=grad,
                                 grad_scale=grad_scale)
        return total

    def get_config(self):
        config = super().get_config()
        config.update({"from_logits": self.from_logits, "ignore_class": None})
        return config


_BY_NAME = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "SparseCategoricalCrossentropy": SparseCategoricalCrossentropy,
}


def get(identifier: Union[str, dict, Loss, None]) -> Loss:
    if isinstance(identifier, Loss):
        return identifier
    if identifier is sparse_categorical_crossentropy:
        return SparseCategoricalCrossentropy()
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier)
        if cls is None:
            raise ValueError(f"Unknown loss {identifier!r}; expected one of {sorted(_BY_NAME)}")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"Expected a loss name, config dict or Loss, got {identifier!r}")


def serialize(loss: Loss) -> dict:
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(config: dict, custom_objects: Any = None) -> Loss:
    name = config.get("class_name")
    cls = _BY_NAME.get(name) or (custom_objects or {}).get(name)
    if cls is None:
        raise ValueError(f"Unknown loss class {name!r}; expected one of {sorted(set(_BY_NAME))}")
    return cls.from_config(config.get("config", {}))
