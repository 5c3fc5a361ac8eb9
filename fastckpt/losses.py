"""Losses, shaped like ``tf.keras.losses``.

Every loss runs in one fused C++ kernel (``fastckpt.ops.dense_loss`` / ``sparse_ce_loss``) that
computes the per-sample losses and, for training, their gradient in the same pass, with tf.keras'
numerics: float32 element math, the same epsilon clipping, and the gradient TensorFlow's autodiff
takes through that clipping. The per-sample functions (``mean_squared_error``, ...) reduce the
last axis as Keras' do; the classes add ``sample_weight`` and the ``reduction``.

Where this differs from tf_keras 2.21, on purpose:

- ``get('mse')`` (any function name) gives the loss object (``MeanSquaredError()``), not the
  function, so training has the fused kernel; ``deserialize('mse')`` gives the function.
- A loss object called with ``(n,)`` targets and ``(n, 1)`` predictions computes one loss per
  sample, as ``fit`` and Keras 3 do (tf_keras' standalone call squeezes tensors to a single
  value and broadcasts arrays to ``(n, n)``).
- ``ignore_class`` with every sample ignored gives 0 (Keras 3), not NaN.
- Focal loss: where ``1 - p_t`` is exactly 0 the focal factor's gradient is taken as 0 (TF gives
  inf/NaN for ``gamma < 1``).
- Values are float32 whatever the input dtype; ``get_config`` leaves out tf_keras' ``fn`` entry
  (Keras 3 refuses it) but accepts it back.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from fastckpt import ops
from fastckpt.checks import is_int

__all__ = [
    "Loss", "LossFunctionWrapper", "Reduction",
    "BinaryCrossentropy", "BinaryFocalCrossentropy", "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy", "MeanSquaredError", "MeanAbsoluteError",
    "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError", "Huber", "LogCosh",
    "KLDivergence", "Poisson", "CosineSimilarity", "Hinge", "SquaredHinge", "CategoricalHinge",
    "binary_crossentropy", "binary_focal_crossentropy", "categorical_crossentropy",
    "sparse_categorical_crossentropy", "mean_squared_error", "mean_absolute_error",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "huber", "log_cosh",
    "kl_divergence", "poisson", "cosine_similarity", "hinge", "squared_hinge", "categorical_hinge",
    "bce", "BCE", "mse", "MSE", "mae", "MAE", "mape", "MAPE", "msle", "MSLE", "kld", "KLD",
    "kullback_leibler_divergence", "logcosh", "huber_loss",
    "get", "serialize", "deserialize",
]

#: Keras' ``backend.epsilon()``: the clipping bound of probabilities.
EPSILON = 1e-7


class Reduction:
    """The reductions of a loss class (``tf.keras.losses.Reduction``)."""

    AUTO = "auto"
    NONE = "none"
    SUM = "sum"
    SUM_OVER_BATCH_SIZE = "sum_over_batch_size"

    @classmethod
    def all(cls):
        return (cls.AUTO, cls.NONE, cls.SUM, cls.SUM_OVER_BATCH_SIZE)

    @classmethod
    def validate(cls, key) -> None:
        _standardize_reduction(key)


# Keras 3 spells "none" as None too, and sum_over_batch_size as "mean".
_REDUCTIONS = {"auto": "auto", "none": "none", None: "none", "sum": "sum",
               "sum_over_batch_size": "sum_over_batch_size", "mean": "sum_over_batch_size"}


def _standardize_reduction(reduction) -> str:
    try:
        return _REDUCTIONS[reduction]
    except (KeyError, TypeError):
        raise ValueError(f"Invalid reduction {reduction!r}: expected one of "
                         f"{list(Reduction.all())} (or Keras 3's None and 'mean')") from None


# --- array checks -------------------------------------------------------------------------------

def _numeric(x, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) \
            or np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"Expected {what} to be a real numeric array, got dtype {a.dtype}")
    return a


def _f32(x, what: str) -> np.ndarray:
    return np.ascontiguousarray(_numeric(x, what), dtype=np.float32)


def _axis(axis, ndim: int, what: str = "axis") -> int:
    if not is_int(axis):
        raise ValueError(f"`axis` must be of type `int`. Received: axis={axis!r} of type {type(axis)}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what}={axis} is out of range for inputs of rank {ndim}")
    return int(axis) % ndim


def _labels(y_true, n_rows: int, n_classes: int, what: str = "y_true") -> np.ndarray:
    """Sparse labels of ``n_rows`` samples as contiguous int32 (see ``_sparse_labels``)."""
    return _sparse_labels(y_true, (n_rows,), n_classes, None, what)


def _sparse_labels(y_true, lead: Tuple[int, ...], n_classes: int, ignore_class,
                   what: str = "y_true") -> np.ndarray:
    """Integer class labels of shape ``lead`` (or ``lead + (1,)``) as contiguous int32, with -1
    where the label equals ``ignore_class``. Checked in their own dtype first: a cast before the
    range check would wrap an int64 2**32+1 or a uint64 2**63 onto a valid class."""
    y = np.asarray(y_true)
    if y.shape != lead:
        if y.shape == lead + (1,):
            y = y.reshape(lead)
        else:
            shapes = f"{lead} or {lead + (1,)}"
            raise ValueError(f"Expected {what} as sparse labels of shape {shapes}, got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(f"Expected {what} to be numeric class labels, got dtype {y.dtype}")
    flat = y.reshape(-1)
    if np.issubdtype(flat.dtype, np.floating):
        frac = np.flatnonzero(~np.isfinite(flat) | (flat != np.floor(np.where(np.isfinite(flat), flat, 0))))
        if frac.size:
            i = int(frac[0])
            raise ValueError(f"Expected integer class labels in {what}, got the non-integral value "
                             f"{flat[i].item()!r} at index {i}")
    ignored = None
    if ignore_class is not None:
        ignored = flat == ignore_class
    # Compared in the labels' own dtype (NumPy compares mixed signed/unsigned ints exactly).
    bad = (flat < 0) | (flat >= n_classes)
    if ignored is not None:
        bad &= ~ignored
    bad = np.flatnonzero(bad)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"Received a label value of {flat[i].item()} (index {i} of {what}) which is "
                         f"outside the valid range of [0, {n_classes})")
    if ignored is None:
        return np.ascontiguousarray(y, dtype=np.int32)
    out = np.where(ignored, 0, flat).astype(np.int32)
    out[ignored] = -1
    return out.reshape(lead)


def _check_ignore_class(ignore_class):
    if ignore_class is None:
        return None
    if not is_int(ignore_class):
        raise TypeError(f"Expected ignore_class to be an int or None, got {ignore_class!r}")
    return int(ignore_class)


# --- per-sample loss functions ------------------------------------------------------------------

_SUM_KINDS = ("categorical_crossentropy", "kl_divergence", "cosine_similarity", "categorical_hinge")


def _dense(kind: str, y_true, y_pred, axis: int = -1, same_shape: bool = False, **params) -> np.ndarray:
    """Per-sample losses of ``kind`` over ``axis`` (y_true broadcast against y_pred, as TF)."""
    pred = _numeric(y_pred, "y_pred")
    true = _numeric(y_true, "y_true")
    if true.shape != pred.shape:
        if same_shape:
            raise ValueError(f"Shapes {true.shape} and {pred.shape} are incompatible: y_true must have "
                             f"the shape of y_pred")
        try:
            shape = np.broadcast_shapes(true.shape, pred.shape)
        except ValueError:
            raise ValueError(f"y_true of shape {true.shape} does not broadcast against y_pred of shape "
                             f"{pred.shape}") from None
        true, pred = np.broadcast_to(true, shape), np.broadcast_to(pred, shape)
    if pred.ndim == 0:
        raise ValueError(f"{kind}: expected inputs with at least one axis (the loss reduces the "
                         f"last one), got scalars")
    ax = _axis(axis, pred.ndim)
    if ax != pred.ndim - 1:
        true, pred = np.moveaxis(true, ax, -1), np.moveaxis(pred, ax, -1)
    true = np.ascontiguousarray(true, np.float32)
    pred = np.ascontiguousarray(pred, np.float32)
    lead, n = pred.shape[:-1], pred.shape[-1]
    m = math.prod(lead)
    if n == 0:
        return np.full(lead, 0.0 if kind in _SUM_KINDS else np.nan, np.float32)
    out = np.empty(m, np.float32)
    ops.dense_loss(kind, true.reshape(m, n), pred.reshape(m, n), losses=out, epsilon=EPSILON, **params)
    return out.reshape(lead)


def mean_squared_error(y_true, y_pred) -> np.ndarray:
    """Mean of ``(y_pred - y_true)**2`` over the last axis."""
    return _dense("mean_squared_error", y_true, y_pred)


def mean_absolute_error(y_true, y_pred) -> np.ndarray:
    """Mean of ``|y_pred - y_true|`` over the last axis."""
    return _dense("mean_absolute_error", y_true, y_pred)


def mean_absolute_percentage_error(y_true, y_pred) -> np.ndarray:
    """``100 *`` mean of ``|y_true - y_pred| / max(|y_true|, eps)`` over the last axis."""
    return _dense("mean_absolute_percentage_error", y_true, y_pred)


def mean_squared_logarithmic_error(y_true, y_pred) -> np.ndarray:
    """Mean of ``(log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1))**2`` over the last axis."""
    return _dense("mean_squared_logarithmic_error", y_true, y_pred)


def huber(y_true, y_pred, delta: float = 1.0) -> np.ndarray:
    """Quadratic for errors up to ``delta``, linear beyond; mean over the last axis."""
    return _dense("huber", y_true, y_pred, delta=float(delta))


def log_cosh(y_true, y_pred) -> np.ndarray:
    """Mean of ``log(cosh(y_pred - y_true))`` over the last axis, computed without overflow."""
    return _dense("log_cosh", y_true, y_pred)


def poisson(y_true, y_pred) -> np.ndarray:
    """Mean of ``y_pred - y_true * log(y_pred + eps)`` over the last axis."""
    return _dense("poisson", y_true, y_pred)


def hinge(y_true, y_pred) -> np.ndarray:
    """Mean of ``max(1 - y_true * y_pred, 0)``; 0/1 labels are taken as -1/1 (all of them or none)."""
    return _dense("hinge", y_true, y_pred)


def squared_hinge(y_true, y_pred) -> np.ndarray:
    """Mean of ``max(1 - y_true * y_pred, 0)**2``; 0/1 labels are taken as -1/1."""
    return _dense("squared_hinge", y_true, y_pred)


def categorical_hinge(y_true, y_pred) -> np.ndarray:
    """``max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)`` over the last axis."""
    return _dense("categorical_hinge", y_true, y_pred)


def kl_divergence(y_true, y_pred) -> np.ndarray:
    """``sum(y_true * log(y_true / y_pred))`` over the last axis, both clipped to ``[eps, 1]``."""
    return _dense("kl_divergence", y_true, y_pred)


def cosine_similarity(y_true, y_pred, axis: int = -1) -> np.ndarray:
    """Negative cosine similarity of the two along ``axis`` (``-1``: opposite ... ``1``)."""
    true, pred = _numeric(y_true, "y_true"), _numeric(y_pred, "y_pred")
    if true.shape != pred.shape and true.ndim and pred.ndim:
        # Each side is normalised before it is broadcast (tf.math.l2_normalize runs first), which
        # the kernel cannot see: this rare case is computed here.
        try:
            prod = _unit(true, axis) * _unit(pred, axis)
        except ValueError:
            raise ValueError(f"y_true of shape {true.shape} does not broadcast against y_pred of "
                             f"shape {pred.shape}") from None
        return -np.sum(prod, axis=_axis(axis, prod.ndim), dtype=np.float32)
    return _dense("cosine_similarity", true, pred, axis=axis)


def _unit(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float32)
    sq = np.sum(x * x, axis=_axis(axis, x.ndim), keepdims=True, dtype=np.float32)
    return x / np.sqrt(np.maximum(sq, np.float32(1e-12)))


def binary_crossentropy(y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0,
                        axis: int = -1) -> np.ndarray:
    """Binary cross-entropy of each value, averaged over ``axis``. Labels are smoothed towards
    0.5 by ``label_smoothing``; probabilities are clipped to ``[eps, 1 - eps]``."""
    return _dense("binary_crossentropy", y_true, y_pred, axis=axis, from_logits=bool(from_logits),
                  label_smoothing=float(label_smoothing))


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing: bool = False, alpha: float = 0.25,
                              gamma: float = 2.0, from_logits: bool = False,
                              label_smoothing: float = 0.0, axis: int = -1) -> np.ndarray:
    """Binary cross-entropy scaled by ``(1 - p_t)**gamma`` (and by ``alpha`` / ``1 - alpha`` with
    ``apply_class_balancing``), averaged over ``axis``."""
    return _dense("binary_focal_crossentropy", y_true, y_pred, axis=axis, from_logits=bool(from_logits),
                  label_smoothing=float(label_smoothing), alpha=float(alpha), gamma=float(gamma),
                  apply_class_balancing=bool(apply_class_balancing))


def categorical_crossentropy(y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0,
                             axis: int = -1) -> np.ndarray:
    """Cross-entropy between one-hot (or soft) labels and the class scores along ``axis``:
    logits (softmax folded in, stable) or probabilities (normalised to sum 1, clipped)."""
    _axis(axis, max(np.ndim(y_pred), 1))
    if np.shape(y_pred)[-1:] == (1,):
        warnings.warn("In loss categorical_crossentropy, expected y_pred.shape to be (batch_size, "
                      f"num_classes) with num_classes > 1. Received: y_pred.shape={np.shape(y_pred)}. "
                      "Consider using 'binary_crossentropy' if you only have 2 classes.",
                      SyntaxWarning, stacklevel=2)
    return _dense("categorical_crossentropy", y_true, y_pred, axis=axis, same_shape=True,
                  from_logits=bool(from_logits), label_smoothing=float(label_smoothing))


def _sparse_ce(y_true, y_pred, from_logits: bool, axis: int, ignore_class, what: str = "y_true"
               ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Per-sample sparse cross-entropy and the mask of the samples counted (None: all)."""
    pred = _numeric(y_pred, "y_pred")
    if pred.ndim == 0:
        raise ValueError("sparse_categorical_crossentropy: expected y_pred with a class axis, got a scalar")
    ax = _axis(axis, pred.ndim)
    if ax != pred.ndim - 1:
        pred = np.moveaxis(pred, ax, -1)
    pred = np.ascontiguousarray(pred, np.float32)
    lead, n = pred.shape[:-1], pred.shape[-1]
    if n == 0:
        raise ValueError("sparse_categorical_crossentropy: y_pred has no classes (last axis of size 0)")
    ignore_class = _check_ignore_class(ignore_class)
    labels = _sparse_labels(y_true, lead, n, ignore_class, what)
    m = math.prod(lead)
    out = np.empty(m, np.float32)
    ops.sparse_ce_loss(pred.reshape(m, n), labels.reshape(m), bool(from_logits), EPSILON, losses=out)
    mask = None if ignore_class is None else labels >= 0
    return out.reshape(lead), mask


def sparse_categorical_crossentropy(y_true, y_pred, from_logits: bool = False, axis: int = -1,
                                    ignore_class: Optional[int] = None) -> np.ndarray:
    """Cross-entropy between integer labels and class scores (logits or probabilities, clipped
    to ``[eps, 1 - eps]``). Samples labelled ``ignore_class`` get a loss of 0.

    Example:
        >>> import numpy as np
        >>> sparse_categorical_crossentropy([0], np.array([[0.0, 0.0]], np.float32), from_logits=True)
        array([0.6931472], dtype=float32)
    """
    return _sparse_ce(y_true, y_pred, from_logits, axis, ignore_class)[0]


# The spellings tf.keras exports next to the function names.
bce = BCE = binary_crossentropy
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
kld = KLD = kullback_leibler_divergence = kl_divergence
logcosh = log_cosh
huber_loss = huber


# --- reduction ----------------------------------------------------------------------------------

def _match_rank(sw: np.ndarray, losses_ndim: int, shape) -> np.ndarray:
    """Keras' squeeze-or-expand of the weights' last axis when ranks differ by one."""
    if sw.ndim - losses_ndim == 1:
        if sw.shape[-1] != 1:
            raise ValueError(f"sample_weight of shape {sw.shape} does not fit the losses of shape "
                             f"{shape}: its extra last axis must have size 1")
        return sw[..., 0]
    if losses_ndim - sw.ndim == 1:
        return sw[..., None]
    return sw


def _weighted_loss(losses: np.ndarray, sample_weight, reduction: str, mask=None):
    """``tf.keras``' ``compute_weighted_loss``: weights broadcast to the per-sample losses
    (squeezed or expanded by one axis), then summed, or summed and divided by the number of
    weighted losses (not by the weights' sum). ``mask``: the samples counted (ignore_class);
    with sum_over_batch_size the divisor is their number."""
    losses = np.asarray(losses, np.float32)
    if reduction == "auto":
        reduction = "sum_over_batch_size"
    sw = None
    if sample_weight is not None:
        sw = np.asarray(_numeric(sample_weight, "sample_weight"), np.float32)
    if mask is not None:
        fmask = mask.astype(np.float32)
        if reduction == "sum_over_batch_size":
            valid = int(np.count_nonzero(mask))
            # 0 when nothing is counted (Keras 3; tf_keras 2 gives NaN there).
            fmask = fmask * np.float32(fmask.size / valid if valid else 0.0)
        sw = fmask if sw is None else _broadcast_mul(fmask, _match_rank(sw, fmask.ndim, fmask.shape)
                                                     if sw.ndim else sw)
    if sw is not None:
        if sw.ndim:
            sw = _match_rank(sw, losses.ndim, losses.shape)
        losses = _broadcast_mul(losses, sw)
    if reduction == "none":
        return losses
    total = losses.sum(dtype=np.float64)
    if reduction == "sum":
        return np.float32(total)
    return np.float32(total / losses.size) if losses.size else np.float32(0.0)


def _broadcast_mul(losses: np.ndarray, sw: np.ndarray) -> np.ndarray:
    try:
        return losses * sw
    except ValueError:
        raise ValueError(f"sample_weight of shape {sw.shape} does not broadcast against the losses of "
                         f"shape {losses.shape}") from None


def _align(y_true, y_pred) -> Tuple[np.ndarray, np.ndarray]:
    """Ranks that differ by one with a size-1 last axis are matched as Keras does before calling
    the loss function: a rank-1 y_true against a ``(n, 1)`` y_pred becomes ``(n, 1)`` (what
    ``fit`` and Keras 3 do), otherwise the size-1 axis is squeezed."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if p.ndim == t.ndim + 1 and p.shape[-1:] == (1,):
        if t.ndim == 1:
            t = t[:, None]
        else:
            p = p[..., 0]
    elif t.ndim == p.ndim + 1 and t.shape[-1:] == (1,):
        t = t[..., 0]
    return t, p


# --- classes ------------------------------------------------------------------------------------

class Loss:
    """Base class: ``loss(y_true, y_pred, sample_weight=None)`` applies ``call`` (the per-sample
    losses), the weights and the ``reduction`` ('auto' and 'sum_over_batch_size': the weighted
    sum over the number of losses; 'sum'; 'none': the weighted per-sample losses)."""

    def __init__(self, reduction: Optional[str] = "auto", name: Optional[str] = None, dtype=None):
        self.reduction = _standardize_reduction(reduction)
        self.name = name

    #: The output activation this loss can take over when the model's output layer applies it
    #: (the Trainer then feeds it that layer's pre-activation values, as tf.keras does): "softmax"
    #: for the categorical cross-entropies, "sigmoid" for the binary ones, None otherwise.
    foldable_activation: Optional[str] = None

    def call(self, y_true, y_pred) -> np.ndarray:
        raise NotImplementedError("Must be implemented in subclasses.")

    def _call_masked(self, y_true, y_pred) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        return self.call(y_true, y_pred), None

    def __call__(self, y_true, y_pred, sample_weight=None):
        losses, mask = self._call_masked(y_true, y_pred)
        return _weighted_loss(losses, sample_weight, self.reduction, mask)

    # --- the training protocol (the Trainer's only way to use a loss) ---------------------------
    def _prepare_targets(self, y, n: int, output_shape, what: str = "y") -> np.ndarray:
        """``y`` for ``n`` rows of an output of shape ``output_shape`` (batch dim first), checked
        once per ``fit``/``evaluate`` call and converted to what ``_fwd_bwd`` takes."""
        arr = _numeric(y, what)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _fwd_bwd(self, y_true: np.ndarray, y_pred: np.ndarray, sample_weight: Optional[np.ndarray],
                 grad: Optional[np.ndarray], grad_scale: float, logits: bool) -> float:
        """One batch: returns the sum over its rows of ``sample_weight * per-sample loss`` (a
        Python float, accumulated in double). With ``grad`` (shape of ``y_pred``, float32), also
        writes ``grad_scale`` times the derivative of that sum w.r.t. ``y_pred``. ``logits``:
        ``y_pred`` holds the pre-activation values of ``foldable_activation``.

        Rows with several losses (outputs of rank > 2, e.g. ``(batch, steps, classes)``) count
        the mean of their losses under sum_over_batch_size and their sum under 'sum'/'none', and
        with ``ignore_class`` the sum is rescaled by ``rows / counted``: ``value / rows`` is then
        Keras' batch loss for sum_over_batch_size, ``value`` for 'sum'."""
        if grad is not None or logits:
            raise NotImplementedError(f"{type(self).__name__} has no gradient kernel")
        per = np.asarray(self.call(y_true, y_pred), np.float64).reshape(len(y_pred), -1).mean(axis=1)
        if sample_weight is not None:
            per = per * np.asarray(sample_weight, np.float64).reshape(per.shape)
        return float(per.sum())

    def get_config(self) -> Dict[str, Any]:
        return {"reduction": self.reduction, "name": self.name}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Loss":
        return cls(**config)


def _fn_name(fn) -> Optional[str]:
    return getattr(fn, "__name__", None)


class LossFunctionWrapper(Loss):
    """A per-sample function ``fn(y_true, y_pred, **kwargs)`` as a loss class."""

    def __init__(self, fn: Callable, reduction: Optional[str] = "auto", name: Optional[str] = None,
                 **kwargs):
        kwargs.pop("dtype", None)  # Keras 3
        super().__init__(reduction=reduction, name=name)
        if isinstance(fn, str):
            fn = _function_named(fn)
        if not callable(fn):
            raise TypeError(f"Expected fn to be a callable, got {fn!r}")
        self.fn = fn
        self._fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        y_true, y_pred = _align(y_true, y_pred)
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(self._fn_kwargs)
        if type(self) is LossFunctionWrapper:
            config["fn"] = _fn_name(self.fn)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _FnKwarg:
    """An attribute stored in the wrapper's function arguments (so it reaches the kernel)."""

    def __init__(self, key: str):
        self.key = key

    def __get__(self, obj, owner=None):
        return self if obj is None else obj._fn_kwargs[self.key]

    def __set__(self, obj, value):
        obj._fn_kwargs[self.key] = value


def _compat_kwargs(cls_name: str, fn: Callable, kwargs: Dict[str, Any]) -> None:
    """Accept what other Keras versions put in a config: tf_keras' ``fn`` (the wrapped function;
    it must be this class's) and Keras 3's ``dtype``; refuse anything else."""
    kwargs = dict(kwargs)
    kwargs.pop("dtype", None)
    if "fn" in kwargs:
        given = kwargs.pop("fn")
        if given not in (None, fn) and _FUNCTIONS.get(given) is not fn:
            raise ValueError(f"{cls_name}: the config wraps the function {given!r:.80}, expected "
                             f"{_fn_name(fn)!r}")
    if kwargs:
        raise TypeError(f"{cls_name}: unexpected argument(s) {sorted(kwargs)}")


class _KernelLoss(LossFunctionWrapper):
    """A built-in loss whose per-sample function is a ``dense_loss`` kernel."""

    _kind: str = ""

    def __init__(self, fn, reduction, name, extra, **fn_kwargs):
        _compat_kwargs(type(self).__name__, fn, extra)
        super().__init__(fn, reduction=reduction, name=name, **fn_kwargs)

    def _kernel_params(self, logits: bool) -> Dict[str, Any]:
        return {}

    def _class_axis(self, ndim: int) -> int:
        return ndim - 1

    def _prepare_targets(self, y, n: int, output_shape, what: str = "y") -> np.ndarray:
        arr = _numeric(y, what)
        want = (n,) + _known_dims(output_shape[1:], arr.shape[1:])
        if arr.shape[:1] != (n,):
            raise ValueError(f"Expected {what} to hold {n} samples, got shape {arr.shape}")
        if arr.shape != want:
            if want[-1:] == (1,) and arr.shape == want[:-1]:
                arr = arr.reshape(want)  # (n,) targets of a (n, 1) output, as Keras' fit
            elif arr.shape == want + (1,):
                arr = arr.reshape(want)
            else:
                hint = ""
                if arr.shape == want[:-1] and isinstance(self, CategoricalCrossentropy):
                    hint = " (integer class labels need sparse_categorical_crossentropy)"
                raise ValueError(f"Expected {what} of shape {want} to match the model output of "
                                 f"shape {tuple(output_shape)}, got {arr.shape}{hint}")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _fwd_bwd(self, y_true, y_pred, sample_weight, grad, grad_scale, logits):
        pred = np.ascontiguousarray(y_pred, np.float32)
        true = np.ascontiguousarray(y_true, np.float32)
        if true.shape != pred.shape:
            raise ValueError(f"{type(self).__name__}: targets of shape {true.shape} do not match the "
                             f"output of shape {pred.shape}")
        rows = pred.shape[0]
        ax = self._class_axis(pred.ndim)
        if ax == 0 and pred.ndim > 1:
            raise ValueError(f"{type(self).__name__}: axis={self.axis} reduces the batch axis; a "
                             f"model output's loss must reduce a later one")
        moved = ax != pred.ndim - 1
        if moved:
            pred, true = (np.ascontiguousarray(np.moveaxis(a, ax, -1)) for a in (pred, true))
        n = pred.shape[-1]
        m = pred.size // n if n else 0
        if rows == 0 or n == 0:
            if grad is not None:
                grad[...] = 0.0
            return 0.0
        per_row = m // rows
        weights = _row_weights(sample_weight, rows, per_row, pred.shape[:-1] if not moved else None)
        scale = 1.0 / per_row if per_row > 1 and self.reduction in ("auto", "sum_over_batch_size") else 1.0
        g = None
        if grad is not None:
            g = grad if not moved and _writable_f32(grad, pred.shape) else np.empty(pred.shape, np.float32)
        total = ops.dense_loss(self._kind, true.reshape(m, n), pred.reshape(m, n), weights=weights,
                               grad=None if g is None else g.reshape(m, n),
                               grad_scale=float(grad_scale) * scale, epsilon=EPSILON,
                               **self._kernel_params(logits))
        if g is not None and g is not grad:
            grad[...] = np.moveaxis(g, -1, ax) if moved else g
        return float(total) * scale


def _known_dims(dims, given) -> Tuple[int, ...]:
    """The output's dims with unknown (None) ones taken from the targets' shape."""
    return tuple(int(given[i]) if d is None and i < len(given) else int(d if d is not None else -1)
                 for i, d in enumerate(dims))


def _writable_f32(a: np.ndarray, shape) -> bool:
    return a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable and a.shape == shape


def _row_weights(sample_weight, rows: int, per_row: int, lead) -> Optional[np.ndarray]:
    """Per-sample weights as one float32 weight per kernel row: ``(rows,)`` (or ``(rows, 1)``)
    repeated over a row's losses, or one weight per loss (``lead`` shaped, temporal weights)."""
    if sample_weight is None:
        return None
    sw = _numeric(sample_weight, "sample_weight")
    if sw.ndim == 0:
        return np.full(rows * per_row, sw, np.float32)
    if sw.shape in ((rows,), (rows, 1)):
        sw = np.ascontiguousarray(sw.reshape(rows), np.float32)
        return sw if per_row == 1 else np.repeat(sw, per_row)
    if lead is not None and per_row > 1 and sw.shape in (tuple(lead), tuple(lead) + (1,)):
        return np.ascontiguousarray(sw.reshape(-1), np.float32)
    raise ValueError(f"Expected sample_weight of shape ({rows},) (one weight per sample), got "
                     f"{sw.shape}")


class _PlainKernelLoss(_KernelLoss):
    """A kernel loss with no arguments of its own: ``_fn`` is its function, whose name is both the
    kernel's kind and the default ``name``."""

    _fn: Callable

    def __init__(self, reduction="auto", name=None, **kwargs):
        fn = type(self)._fn
        super().__init__(fn, reduction, fn.__name__ if name is None else name, kwargs)

    @property
    def _kind(self) -> str:
        return type(self)._fn.__name__


class MeanSquaredError(_PlainKernelLoss):
    """Mean of squared errors (``mse``)."""

    _fn = staticmethod(mean_squared_error)


class MeanAbsoluteError(_PlainKernelLoss):
    """Mean of absolute errors (``mae``)."""

    _fn = staticmethod(mean_absolute_error)


class MeanAbsolutePercentageError(_PlainKernelLoss):
    """Mean absolute error relative to ``|y_true|``, in percent (``mape``)."""

    _fn = staticmethod(mean_absolute_percentage_error)


class MeanSquaredLogarithmicError(_PlainKernelLoss):
    """Mean squared error of ``log(1 + y)`` (``msle``)."""

    _fn = staticmethod(mean_squared_logarithmic_error)


class Huber(_KernelLoss):
    """Huber loss: squared error up to ``delta``, absolute error beyond."""

    _kind = "huber"
    delta = _FnKwarg("delta")

    def __init__(self, delta: float = 1.0, reduction="auto", name="huber_loss", **kwargs):
        super().__init__(huber, reduction, name, kwargs, delta=float(delta))

    def _kernel_params(self, logits):
        return {"delta": self.delta}


class LogCosh(_PlainKernelLoss):
    """Logarithm of the hyperbolic cosine of the error."""

    _fn = staticmethod(log_cosh)


class Poisson(_PlainKernelLoss):
    """Poisson loss: ``y_pred - y_true * log(y_pred)``."""

    _fn = staticmethod(poisson)


class KLDivergence(_PlainKernelLoss):
    """Kullback-Leibler divergence of ``y_pred`` from ``y_true``."""

    _fn = staticmethod(kl_divergence)


class Hinge(_PlainKernelLoss):
    """Hinge loss for labels in {-1, 1} (0/1 labels are mapped)."""

    _fn = staticmethod(hinge)


class SquaredHinge(_PlainKernelLoss):
    """Squared hinge loss for labels in {-1, 1} (0/1 labels are mapped)."""

    _fn = staticmethod(squared_hinge)


class CategoricalHinge(_PlainKernelLoss):
    """Categorical hinge loss for one-hot labels."""

    _fn = staticmethod(categorical_hinge)


class CosineSimilarity(_KernelLoss):
    """Negative cosine similarity along ``axis``: minimising it aligns the vectors."""

    _kind = "cosine_similarity"
    axis = _FnKwarg("axis")

    def __init__(self, axis: int = -1, reduction="auto", name="cosine_similarity", **kwargs):
        super().__init__(cosine_similarity, reduction, name, kwargs, axis=axis)

    def _class_axis(self, ndim):
        return _axis(self.axis, ndim)


class BinaryCrossentropy(_KernelLoss):
    """Binary cross-entropy between labels in [0, 1] and probabilities (or logits with
    ``from_logits=True``), averaged over ``axis``.

    Example:
        >>> import numpy as np
        >>> round(float(BinaryCrossentropy(from_logits=True)([[1.0]], np.zeros((1, 1), np.float32))), 4)
        0.6931
    """

    _kind = "binary_crossentropy"
    foldable_activation = "sigmoid"
    from_logits = _FnKwarg("from_logits")
    label_smoothing = _FnKwarg("label_smoothing")
    axis = _FnKwarg("axis")

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction="auto", name="binary_crossentropy", **kwargs):
        super().__init__(binary_crossentropy, reduction, name, kwargs, from_logits=bool(from_logits),
                         label_smoothing=float(label_smoothing), axis=axis)

    def _kernel_params(self, logits):
        return {"from_logits": bool(logits or self.from_logits),
                "label_smoothing": self.label_smoothing}

    def _class_axis(self, ndim):
        return _axis(self.axis, ndim)


class BinaryFocalCrossentropy(_KernelLoss):
    """Binary cross-entropy down-weighting easy examples by ``(1 - p_t)**gamma``; with
    ``apply_class_balancing``, positives are weighted ``alpha`` and negatives ``1 - alpha``."""

    _kind = "binary_focal_crossentropy"
    foldable_activation = "sigmoid"
    apply_class_balancing = _FnKwarg("apply_class_balancing")
    alpha = _FnKwarg("alpha")
    gamma = _FnKwarg("gamma")
    from_logits = _FnKwarg("from_logits")
    label_smoothing = _FnKwarg("label_smoothing")
    axis = _FnKwarg("axis")

    def __init__(self, apply_class_balancing: bool = False, alpha: float = 0.25, gamma: float = 2.0,
                 from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction="auto", name="binary_focal_crossentropy", **kwargs):
        super().__init__(binary_focal_crossentropy, reduction, name, kwargs,
                         apply_class_balancing=bool(apply_class_balancing), alpha=float(alpha),
                         gamma=float(gamma), from_logits=bool(from_logits),
                         label_smoothing=float(label_smoothing), axis=axis)

    def _kernel_params(self, logits):
        return {"from_logits": bool(logits or self.from_logits), "label_smoothing": self.label_smoothing,
                "alpha": self.alpha, "gamma": self.gamma,
                "apply_class_balancing": self.apply_class_balancing}

    def _class_axis(self, ndim):
        return _axis(self.axis, ndim)


class CategoricalCrossentropy(_KernelLoss):
    """Cross-entropy between one-hot (or soft) labels and class probabilities or logits.

    Example:
        >>> import numpy as np
        >>> round(float(CategoricalCrossentropy(from_logits=True)([[0.0, 1.0]], np.zeros((1, 2), np.float32))), 4)
        0.6931
    """

    _kind = "categorical_crossentropy"
    foldable_activation = "softmax"
    from_logits = _FnKwarg("from_logits")
    label_smoothing = _FnKwarg("label_smoothing")
    axis = _FnKwarg("axis")

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction="auto", name="categorical_crossentropy", **kwargs):
        super().__init__(categorical_crossentropy, reduction, name, kwargs,
                         from_logits=bool(from_logits), label_smoothing=float(label_smoothing),
                         axis=axis)

    def _kernel_params(self, logits):
        return {"from_logits": bool(logits or self.from_logits),
                "label_smoothing": self.label_smoothing}

    def _class_axis(self, ndim):
        return _axis(self.axis, ndim)


class SparseCategoricalCrossentropy(LossFunctionWrapper):
    """Cross-entropy between integer labels and class scores (``from_logits``) or probabilities.
    Samples labelled ``ignore_class`` are left out: they add nothing, and sum_over_batch_size
    divides by the number of the others.

    Example:
        >>> import numpy as np
        >>> loss = SparseCategoricalCrossentropy(from_logits=True)
        >>> round(float(loss([0], np.array([[0.0, 0.0]], np.float32))), 4)
        0.6931
    """

    foldable_activation = "softmax"
    from_logits = _FnKwarg("from_logits")
    ignore_class = _FnKwarg("ignore_class")

    def __init__(self, from_logits: bool = False, ignore_class: Optional[int] = None,
                 reduction="auto", name: str = "sparse_categorical_crossentropy", **kwargs):
        if kwargs.get("axis", -1) == -1:  # Keras 3 may record the (default) class axis
            kwargs.pop("axis", None)
        _compat_kwargs(type(self).__name__, sparse_categorical_crossentropy, kwargs)
        super().__init__(sparse_categorical_crossentropy, reduction=reduction, name=name,
                         from_logits=bool(from_logits), ignore_class=_check_ignore_class(ignore_class))

    def call(self, y_true, y_pred):
        return self._call_masked(y_true, y_pred)[0]

    def _call_masked(self, y_true, y_pred):
        return _sparse_ce(y_true, y_pred, self.from_logits, -1, self.ignore_class)

    @property
    def _native_fusable(self) -> bool:
        """Whether the native whole-step trainer (plain sparse CE, no ignore_class) computes it."""
        return self.ignore_class is None

    def _prepare_targets(self, y, n: int, output_shape, what: str = "y") -> np.ndarray:
        lead = (n,) + _known_dims(output_shape[1:-1], np.shape(y)[1:])
        return _sparse_labels(y, lead, int(output_shape[-1]), self.ignore_class, what)

    def _fwd_bwd(self, y_true, y_pred, sample_weight, grad, grad_scale, logits):
        from_logits = bool(logits or self.from_logits)
        pred = np.ascontiguousarray(y_pred, np.float32)
        labels = y_true
        if labels.dtype != np.int32 or labels.shape != pred.shape[:-1]:
            labels = _sparse_labels(labels, pred.shape[:-1], pred.shape[-1], self.ignore_class)
        if (sample_weight is None and self.ignore_class is None and pred.ndim == 2
                and (grad is None or _writable_f32(grad, pred.shape))):
            # Today's kernel, bit for bit what the fused trainer computes.
            _, total = ops.sparse_ce(pred, np.ascontiguousarray(labels), from_logits, EPSILON,
                                     grad=grad, grad_scale=grad_scale)
            return total
        rows, n = pred.shape[0], pred.shape[-1]
        m = pred.size // n if n else 0
        if rows == 0 or n == 0:
            if grad is not None:
                grad[...] = 0.0
            return 0.0
        per_row = m // rows
        flat = np.ascontiguousarray(labels).reshape(m)
        weights = _row_weights(sample_weight, rows, per_row, pred.shape[:-1])
        scale = 1.0
        if self.reduction in ("auto", "sum_over_batch_size"):
            counted = int(np.count_nonzero(flat >= 0)) if self.ignore_class is not None else m
            scale = rows / counted if counted else 0.0
        g = None
        if grad is not None:
            g = grad if _writable_f32(grad, pred.shape) else np.empty(pred.shape, np.float32)
        total = ops.sparse_ce_loss(pred.reshape(m, n), flat, from_logits, EPSILON, weights=weights,
                                   grad=None if g is None else g.reshape(m, n),
                                   grad_scale=float(grad_scale) * scale)
        if g is not None and g is not grad:
            grad[...] = g
        return float(total) * scale


# --- registry -----------------------------------------------------------------------------------

_LOSS_CLASSES = (BinaryCrossentropy, BinaryFocalCrossentropy, CategoricalCrossentropy,
                 SparseCategoricalCrossentropy, MeanSquaredError, MeanAbsoluteError,
                 MeanAbsolutePercentageError, MeanSquaredLogarithmicError, Huber, LogCosh,
                 KLDivergence, Poisson, CosineSimilarity, Hinge, SquaredHinge, CategoricalHinge)

#: Class name -> class of every built-in loss (what configs may name).
BUILTIN_LOSSES: Dict[str, type] = {cls.__name__: cls for cls in _LOSS_CLASSES}

# Each per-sample function and the class computing it.
_FN_CLASS = {
    binary_crossentropy: BinaryCrossentropy, binary_focal_crossentropy: BinaryFocalCrossentropy,
    categorical_crossentropy: CategoricalCrossentropy,
    sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
    mean_squared_error: MeanSquaredError, mean_absolute_error: MeanAbsoluteError,
    mean_absolute_percentage_error: MeanAbsolutePercentageError,
    mean_squared_logarithmic_error: MeanSquaredLogarithmicError, huber: Huber, log_cosh: LogCosh,
    kl_divergence: KLDivergence, poisson: Poisson, cosine_similarity: CosineSimilarity,
    hinge: Hinge, squared_hinge: SquaredHinge, categorical_hinge: CategoricalHinge,
}

# Every name a function goes by in tf.keras (and Keras 3): its own and the aliases.
_FUNCTIONS: Dict[str, Callable] = {fn.__name__: fn for fn in _FN_CLASS}
_FUNCTIONS.update({
    "bce": binary_crossentropy, "BCE": binary_crossentropy,
    "mse": mean_squared_error, "MSE": mean_squared_error,
    "mae": mean_absolute_error, "MAE": mean_absolute_error,
    "mape": mean_absolute_percentage_error, "MAPE": mean_absolute_percentage_error,
    "msle": mean_squared_logarithmic_error, "MSLE": mean_squared_logarithmic_error,
    "kld": kl_divergence, "KLD": kl_divergence, "kullback_leibler_divergence": kl_divergence,
    "logcosh": log_cosh, "huber_loss": huber,
})


def _valid_names():
    return sorted(set(BUILTIN_LOSSES) | set(_FUNCTIONS))


def _function_named(name: str) -> Callable:
    fn = _FUNCTIONS.get(name)
    if fn is None:
        raise ValueError(f"Unknown loss function {name!r}; expected one of {sorted(_FUNCTIONS)}")
    return fn


def get(identifier: Union[str, dict, Loss, Callable, None]) -> Optional[Loss]:
    """A Loss object from a name (class, function or alias: ``'mse'``, ``'MeanSquaredError'``,
    ...), a config dict, a Loss, a Loss class or a function. Unlike tf.keras, function names give
    their loss class (``get('mse')`` is a ``MeanSquaredError()``), so training has its kernel."""
    if identifier is None:
        return None
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        cls = BUILTIN_LOSSES.get(identifier)
        if cls is None and identifier in _FUNCTIONS:
            cls = _FN_CLASS[_FUNCTIONS[identifier]]
        if cls is None:
            raise ValueError(f"Unknown loss {identifier!r}; expected one of {_valid_names()}")
        return cls()
    if isinstance(identifier, dict):
        out = deserialize(identifier)
        return out if isinstance(out, Loss) else get(out)
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if callable(identifier):
        cls = _FN_CLASS.get(identifier)
        return cls() if cls is not None else LossFunctionWrapper(identifier, name=_fn_name(identifier))
    raise TypeError(f"Expected a loss name, config dict or Loss, got {identifier!r}")


def serialize(loss, use_legacy_format: bool = False) -> Any:
    """The config tf.keras writes for ``loss``: ``{'module', 'class_name', 'config',
    'registered_name'}`` for a Loss (``{'class_name', 'config'}`` with ``use_legacy_format``), the
    ``'function'`` entry for a per-sample function."""
    if loss is None:
        return None
    if isinstance(loss, Loss):
        entry = {"class_name": type(loss).__name__, "config": loss.get_config()}
        if use_legacy_format:
            return entry
        builtin = BUILTIN_LOSSES.get(type(loss).__name__) is type(loss) or type(loss) is LossFunctionWrapper
        return {"module": "keras.losses" if builtin else type(loss).__module__, **entry,
                "registered_name": None if builtin else type(loss).__name__}
    name = _fn_name(loss)
    if callable(loss) and name:
        if use_legacy_format:
            return name
        return {"module": "builtins", "class_name": "function", "config": name,
                "registered_name": "function"}
    raise TypeError(f"Expected a Loss or a loss function, got {loss!r:.80}")


def deserialize(config, custom_objects: Optional[Dict[str, Any]] = None,
                use_legacy_format: bool = False) -> Union[Loss, Callable]:
    """The inverse of ``serialize``, reading tf_keras' and Keras 3's configs (``fn``, ``dtype``,
    ``module`` and ``registered_name`` entries included). A function name or ``'function'``
    entry gives the function, as tf.keras; ``custom_objects`` maps extra names to classes or
    functions."""
    custom = dict(custom_objects or {})
    if isinstance(config, str):
        if config in custom:
            obj = custom[config]
            return obj() if isinstance(obj, type) else obj
        if config in _FUNCTIONS:
            return _FUNCTIONS[config]
        if config in BUILTIN_LOSSES:
            return BUILTIN_LOSSES[config]()
        raise ValueError(f"Unknown loss {config!r}; expected one of {_valid_names()}")
    if not isinstance(config, dict):
        raise TypeError(f"Expected a loss config dict or name, got {config!r:.80}")
    name = config.get("class_name")
    inner = config.get("config", {})
    if name == "function":
        if not isinstance(inner, str):
            raise ValueError(f"Expected the function's name as the config of a 'function' entry, "
                             f"got {inner!r:.80}")
        return deserialize(inner, custom_objects)
    cls = custom.get(name) or custom.get(config.get("registered_name")) or BUILTIN_LOSSES.get(name)
    if cls is None and name == "LossFunctionWrapper":
        cls = LossFunctionWrapper
    if cls is None:
        raise ValueError(f"Unknown loss class {name!r}; expected one of {sorted(BUILTIN_LOSSES)}")
    if inner is None:
        inner = {}
    if not isinstance(inner, dict):
        raise ValueError(f"Expected the config of loss {name!r} to be a dict, got {inner!r:.80}")
    inner = dict(inner)
    if cls is LossFunctionWrapper and isinstance(inner.get("fn"), str) and inner["fn"] in custom:
        inner["fn"] = custom[inner["fn"]]
    return cls.from_config(inner)
