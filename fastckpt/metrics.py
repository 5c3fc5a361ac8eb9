"""Metrics, shaped like ``tf.keras.metrics``: stateful ``update_state`` / ``result`` / ``reset_state``.

Every metric keeps its running state in plain attributes (floats or NumPy arrays), so
``_get_state``/``_set_state`` can save and restore it. Sample weights follow tf_keras: they are
aligned with the per-sample values (a trailing axis added or squeezed), broadcast over the remaining
axes, and a weighted mean divides by the sum of the broadcast weights.
"""

from __future__ import annotations

import copy
import re
import warnings
from typing import Any, Callable, Dict, Optional, Union

import numpy as np

from fastckpt import losses, ops
from fastckpt.losses import _labels
from fastckpt.variables import Variable

__all__ = [
    "Metric", "Reduce", "Mean", "Sum", "MeanMetricWrapper",
    "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy",
    "AUC", "Precision", "Recall", "TruePositives", "FalsePositives", "TrueNegatives", "FalseNegatives",
    "PrecisionAtRecall", "RecallAtPrecision", "SensitivityAtSpecificity", "SpecificityAtSensitivity",
    "MeanSquaredError", "RootMeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError", "LogCoshError", "CosineSimilarity", "R2Score",
    "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
    "KLDivergence", "Poisson", "Hinge", "SquaredHinge", "CategoricalHinge",
    "accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
    "get", "serialize", "deserialize", "BUILTIN_METRICS",
]

EPSILON = 1e-7          # backend.epsilon() in tf_keras
NEG_INF = -1e10         # what tf_keras gives the predictions outside the top k


def _snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _float(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"Expected numeric values, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


def _align(y_pred: np.ndarray, y_true: np.ndarray):
    """tf_keras' ``squeeze_or_expand_dimensions`` for labels: drop a trailing axis of size 1 where
    the ranks differ by one, unless ``y_true`` is sparse labels for a ``y_pred`` of classes."""
    if y_pred.ndim - y_true.ndim != 1 or (y_pred.ndim and y_pred.shape[-1] == 1):
        d = y_pred.ndim - y_true.ndim
        if d == 1 and y_pred.shape[-1] == 1:
            y_pred = y_pred[..., 0]
        elif d == -1 and y_true.shape[-1] == 1:
            y_true = y_true[..., 0]
    return y_pred, y_true


def _weights_for(values: np.ndarray, sample_weight, what: str = "sample_weight") -> np.ndarray:
    """``sample_weight`` aligned with ``values`` (a trailing axis squeezed or added) and broadcast
    to its shape, as tf_keras' metrics do. Raises a ValueError naming the shapes."""
    w = _float(sample_weight).astype(np.float64)
    if w.ndim and values.ndim:
        if w.ndim - values.ndim == 1 and w.shape[-1] == 1:
            w = w[..., 0]
        elif values.ndim - w.ndim == 1:
            w = w[..., None]
    try:
        return np.broadcast_to(w, values.shape)
    except ValueError:
        raise ValueError(f"Expected {what} broadcastable to the values of shape {values.shape}, got "
                         f"shape {np.shape(sample_weight)}") from None


def _reduce(values, sample_weight, summing: bool = False):
    """(sum of weighted values, sum of weights) of one batch, as tf_keras' ``Reduce`` computes them."""
    v = _float(values).astype(np.float64)
    if sample_weight is None:
        return float(v.sum()), float(v.size)
    w = _float(sample_weight).astype(np.float64)
    if v.ndim == 0:  # a scalar (e.g. a Loss object's batch mean) counts with the batch's weight
        return float(v * w.sum()) if w.ndim else float(v * w), float(w.sum()) if w.ndim else float(w)
    if w.ndim and values is not None:
        if w.ndim - v.ndim == 1 and w.shape[-1] == 1:
            w = w[..., 0]
        elif v.ndim - w.ndim == 1:
            w = w[..., None]
    try:
        wb = np.broadcast_to(w, v.shape)
    except ValueError:
        # Weights of fewer axes than the values: reduce the values over the extra trailing axes.
        if w.ndim < v.ndim and v.shape[:w.ndim] == w.shape:
            axes = tuple(range(w.ndim, v.ndim))
            v = v.sum(axis=axes) if summing else v.mean(axis=axes)
            wb = w
        else:
            raise ValueError(f"Expected sample_weight broadcastable to the values of shape "
                             f"{v.shape}, got shape {w.shape}") from None
    return float((v * wb).sum()), float(wb.sum())


# --------------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------------

class Metric:
    """Base class. Subclasses keep their state in attributes set by ``reset_state``."""

    def __init__(self, name: Optional[str] = None, dtype=None):
        self.name = name or _snake(type(self).__name__)
        if isinstance(dtype, dict):  # Keras 3 records a DTypePolicy
            dtype = (dtype.get("config") or {}).get("name", "float32")
        self.dtype = "float32" if dtype is None else np.dtype(getattr(dtype, "name", dtype)).name
        self.reset_state()

    def reset_state(self) -> None:
        state_vars = self.__dict__.get("_state_vars")
        if state_vars:  # a subclass that keeps its state in add_weight variables
            for var in state_vars:
                var.assign(np.zeros(var.shape, var.dtype))
            return
        self.total = 0.0
        self.count = 0.0

    def add_weight(self, name: str, shape=(), initializer="zeros", dtype=None, **kwargs) -> Variable:
        """A state variable for a subclass (``assign``/``assign_add``, ``numpy()``), set back to
        zeros by ``reset_state`` and saved with the metric's state."""
        if initializer not in ("zeros", None):
            raise NotImplementedError(f"Metric.add_weight: initializer {initializer!r}; only 'zeros'")
        var = Variable(np.zeros(tuple(shape), dtype or self.dtype), name=f"{self.name}/{name}",
                       trainable=False)
        self.__dict__.setdefault("_state_vars", []).append(var)
        return var

    @property
    def variables(self) -> list:
        return list(self.__dict__.get("_state_vars", []))

    def reset_states(self) -> None:
        self.reset_state()

    # The Trainer evaluates validation data between training steps without disturbing the running
    # training metrics: it saves a metric's state and puts it back.
    def _get_state(self) -> Dict[str, Any]:
        return copy.deepcopy(vars(self))

    def _set_state(self, state: Dict[str, Any]) -> None:
        vars(self).update(copy.deepcopy(state))

    def update_state(self, *args, **kwargs) -> None:
        raise NotImplementedError

    def result(self):
        return np.float32(self.total / self.count) if self.count else np.float32(0.0)

    def __call__(self, *args, **kwargs):
        self.update_state(*args, **kwargs)
        return self.result()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Metric":
        return cls(**config)


class Reduce(Metric):
    """Running sum (``reduction='sum'``) or weighted mean of the values it is given."""

    def __init__(self, reduction: str, name: Optional[str] = None, dtype=None):
        if reduction not in ("sum", "weighted_mean", "sum_over_batch_size"):
            raise ValueError(f"Expected reduction in sum/weighted_mean/sum_over_batch_size, got "
                             f"{reduction!r}")
        self.reduction = reduction
        super().__init__(name=name, dtype=dtype)

    def update_state(self, values, sample_weight=None) -> None:
        s, c = _reduce(values, sample_weight, summing=self.reduction == "sum")
        self.total += s
        if self.reduction == "sum_over_batch_size":
            c = float(np.size(values))
        self.count += c

    def result(self):
        if self.reduction == "sum":
            return np.float32(self.total)
        return super().result()


class Mean(Reduce):
    """Weighted running mean of the values it is given.

    Example:
        >>> m = Mean()
        >>> m.update_state([1, 2, 3], sample_weight=[1, 0, 1])
        >>> float(m.result())
        2.0
    """

    def __init__(self, name: str = "mean", dtype=None):
        super().__init__("weighted_mean", name=name, dtype=dtype)

    def get_config(self):
        return Metric.get_config(self)


class Sum(Reduce):
    """Running (weighted) sum of the values it is given."""

    def __init__(self, name: str = "sum", dtype=None):
        super().__init__("sum", name=name, dtype=dtype)

    def get_config(self):
        return Metric.get_config(self)


def _fn_name(fn) -> Optional[str]:
    if isinstance(fn, losses.Loss):
        return fn.name or _snake(type(fn).__name__)
    return getattr(fn, "__name__", None)


class MeanMetricWrapper(Mean):
    """Weighted mean of ``fn(y_true, y_pred, **kwargs)``, a per-sample function (or a ``Loss``)."""

    def __init__(self, fn: Callable, name: Optional[str] = None, dtype=None, **kwargs):
        if not callable(fn):
            raise TypeError(f"MeanMetricWrapper: expected fn to be callable, got {fn!r}")
        self._fn = fn
        self._fn_kwargs = kwargs
        super().__init__(name=name or _fn_name(fn) or "mean_metric_wrapper", dtype=dtype)

    def _values(self, y_true, y_pred):
        yt, yp = _float(y_true), _float(y_pred)
        yp, yt = _align(yp, yt)
        return self._fn(yt, yp, **self._fn_kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        values = self._values(y_true, y_pred)
        if isinstance(values, tuple):  # (values, valid mask) from a function that masks entries
            values, valid = values
            w = np.ones(np.shape(values)) if sample_weight is None else \
                _weights_for(np.asarray(values), sample_weight)
            sample_weight = w * valid
        super().update_state(values, sample_weight)

    def get_config(self):
        config = Metric.get_config(self)
        config.update(self._fn_kwargs)
        if type(self) is MeanMetricWrapper:
            # As tf_keras writes it in an .h5 training_config: a function by name, a loss as
            # its class record. (Its .keras records, {'class_name': 'function', ...}, load too.)
            if isinstance(self._fn, losses.Loss):
                config["fn"] = {"class_name": type(self._fn).__name__,
                                "config": self._fn.get_config()}
            else:
                config["fn"] = _fn_name(self._fn)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if cls is MeanMetricWrapper:
            fn = config.pop("fn", None)
            return cls(_fn_from_config(fn), **config)
        config.pop("fn", None)
        return cls(**config)


def _fn_from_config(fn):
    """The function a MeanMetricWrapper config names: a name, a function record or a loss config."""
    if isinstance(fn, dict):
        if fn.get("class_name") == "function" or fn.get("registered_name") == "function":
            fn = fn.get("config")
        else:
            return losses.deserialize(fn)
    if isinstance(fn, str):
        if fn in ("acc", "crossentropy", "ce"):
            return _ByShapes(_ACC if fn == "acc" else _CE, fn)
        found = _FUNCTIONS.get(fn) or _loss_function(fn)
        if found is None:
            raise ValueError(f"Unknown metric function {fn!r}; expected one of {sorted(_FUNCTIONS)}")
        return found
    if callable(fn):
        return fn
    raise TypeError(f"MeanMetricWrapper: expected fn as a name or function, got {fn!r:.80}")


# --------------------------------------------------------------------------------------------------
# Per-sample functions (NumPy, as tf_keras defines them)
# --------------------------------------------------------------------------------------------------

def accuracy(y_true, y_pred) -> np.ndarray:
    """1.0 where ``y_pred`` equals ``y_true`` exactly."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape != yp.shape:
        try:
            np.broadcast_shapes(yt.shape, yp.shape)
        except ValueError:
            raise ValueError(f"Accuracy: y_true of shape {yt.shape} and y_pred of shape {yp.shape} "
                             f"are incompatible") from None
    return (yp.astype(yt.dtype) == yt).astype(np.float32) if yt.dtype != yp.dtype else \
        (yp == yt).astype(np.float32)


def _binary_matches(y_true, y_pred, threshold=0.5) -> np.ndarray:
    yp = np.asarray(y_pred, np.float32)
    return (np.asarray(y_true, np.float32) == (yp > np.float32(threshold))).astype(np.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5) -> np.ndarray:
    """Per-sample fraction of entries where ``y_pred > threshold`` matches the 0/1 label."""
    return _binary_matches(y_true, y_pred, threshold).mean(axis=-1)


def _sparse_matches(y_true, y_pred) -> np.ndarray:
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yp.ndim == 0:
        raise ValueError("Expected y_pred of rank >= 1 (the last axis holding the classes)")
    shape = yt.shape
    if yt.ndim == yp.ndim:
        if yt.shape[-1] != 1:
            raise ValueError(f"Expected sparse labels y_true of shape {yp.shape[:-1]} or "
                             f"{yp.shape[:-1] + (1,)}, got {yt.shape}")
        yt = yt[..., 0]
    if yt.shape != yp.shape[:-1]:
        raise ValueError(f"Expected sparse labels y_true of shape {yp.shape[:-1]}, got {shape}")
    return (np.argmax(yp, axis=-1) == yt).astype(np.float32).reshape(shape)


def sparse_categorical_accuracy(y_true, y_pred) -> np.ndarray:
    """1.0 where the arg-max of ``y_pred`` equals the integer label."""
    m = _sparse_matches(y_true, y_pred)
    if m.ndim > 1 and m.shape[-1] == 1:
        m = m[..., 0]
    return m


def categorical_accuracy(y_true, y_pred) -> np.ndarray:
    """1.0 where the arg-max of ``y_pred`` equals the arg-max of the one-hot ``y_true``."""
    yt = np.asarray(y_true)
    return _sparse_matches(np.argmax(yt, axis=-1), y_pred)


def _in_top_k(labels: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """tf.math.in_top_k: ties at the boundary count as inside; non-finite scores never do."""
    yp = np.asarray(y_pred, np.float32)
    yp = yp.reshape(-1, yp.shape[-1])
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    if lab.shape[0] != yp.shape[0]:
        raise ValueError(f"Expected {yp.shape[0]} labels for predictions of shape {np.shape(y_pred)}, "
                         f"got {lab.shape[0]}")
    ok = (lab >= 0) & (lab < yp.shape[1])
    target = yp[np.arange(len(lab)), np.clip(lab, 0, yp.shape[1] - 1)]
    ahead = (yp > target[:, None]).sum(axis=1)
    finite = np.isfinite(yp).all(axis=1)
    return (ok & finite & (ahead < k)).astype(np.float32)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    """1.0 where the integer label is among the ``k`` highest scores."""
    yt = np.asarray(y_true)
    m = _in_top_k(yt, y_pred, k)
    return m.reshape(yt.shape) if yt.ndim > 1 else m


def top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    """1.0 where the one-hot label's class is among the ``k`` highest scores."""
    return _in_top_k(np.argmax(np.asarray(y_true), axis=-1), y_pred, k)


# --- loss-like functions ------------------------------------------------------------------------
# The public per-sample loss functions of fastckpt.losses are used where they exist. The private
# NumPy fallbacks below stand in for those not on this branch yet (marked FALLBACK); they follow
# tf_keras' formulas and are dropped once fastckpt.losses provides every name.

def _fb_binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    # FALLBACK for losses.binary_crossentropy
    yt = np.asarray(y_true, np.float64)
    yp = np.asarray(y_pred, np.float64)
    if label_smoothing:
        yt = yt * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        el = np.maximum(yp, 0) - yp * yt + np.log1p(np.exp(-np.abs(yp)))
    else:
        p = np.clip(yp, EPSILON, 1.0 - EPSILON)
        el = -(yt * np.log(p + EPSILON) + (1.0 - yt) * np.log(1.0 - p + EPSILON))
    return el.mean(axis=axis)


def _fb_categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    # FALLBACK for losses.categorical_crossentropy
    yt = np.asarray(y_true, np.float64)
    yp = np.asarray(y_pred, np.float64)
    if label_smoothing:
        yt = yt * (1.0 - label_smoothing) + label_smoothing / yp.shape[axis]
    if from_logits:
        z = yp - yp.max(axis=axis, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    else:
        p = yp / yp.sum(axis=axis, keepdims=True)
        logp = np.log(np.clip(p, EPSILON, 1.0 - EPSILON))
    return -(yt * logp).sum(axis=axis)


def _fb_mean_squared_error(y_true, y_pred):
    # FALLBACK for losses.mean_squared_error
    return np.square(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)).mean(axis=-1)


def _fb_mean_absolute_error(y_true, y_pred):
    # FALLBACK for losses.mean_absolute_error
    return np.abs(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)).mean(axis=-1)


def _fb_mean_absolute_percentage_error(y_true, y_pred):
    # FALLBACK for losses.mean_absolute_percentage_error
    yt = np.asarray(y_true, np.float64)
    yp = np.asarray(y_pred, np.float64)
    return 100.0 * (np.abs(yt - yp) / np.maximum(np.abs(yt), EPSILON)).mean(axis=-1)


def _fb_mean_squared_logarithmic_error(y_true, y_pred):
    # FALLBACK for losses.mean_squared_logarithmic_error
    yt = np.log(np.maximum(np.asarray(y_true, np.float64), EPSILON) + 1.0)
    yp = np.log(np.maximum(np.asarray(y_pred, np.float64), EPSILON) + 1.0)
    return np.square(yp - yt).mean(axis=-1)


def _fb_log_cosh(y_true, y_pred):
    # FALLBACK for losses.log_cosh
    x = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    return (x + np.logaddexp(0.0, -2.0 * x) - np.log(2.0)).mean(axis=-1)


def _fb_kl_divergence(y_true, y_pred):
    # FALLBACK for losses.kl_divergence
    yt = np.clip(np.asarray(y_true, np.float64), EPSILON, 1.0)
    yp = np.clip(np.asarray(y_pred, np.float64), EPSILON, 1.0)
    return (yt * np.log(yt / yp)).sum(axis=-1)


def _fb_poisson(y_true, y_pred):
    # FALLBACK for losses.poisson
    yt = np.asarray(y_true, np.float64)
    yp = np.asarray(y_pred, np.float64)
    return (yp - yt * np.log(yp + EPSILON)).mean(axis=-1)


def _signed_labels(y_true):
    yt = np.asarray(y_true, np.float64)
    if np.all((yt == 0) | (yt == 1)):
        yt = 2.0 * yt - 1.0
    return yt


def _fb_hinge(y_true, y_pred):
    # FALLBACK for losses.hinge
    return np.maximum(1.0 - _signed_labels(y_true) * np.asarray(y_pred, np.float64), 0.0).mean(axis=-1)


def _fb_squared_hinge(y_true, y_pred):
    # FALLBACK for losses.squared_hinge
    h = np.maximum(1.0 - _signed_labels(y_true) * np.asarray(y_pred, np.float64), 0.0)
    return np.square(h).mean(axis=-1)


def _fb_categorical_hinge(y_true, y_pred):
    # FALLBACK for losses.categorical_hinge
    yt = np.asarray(y_true, np.float64)
    yp = np.asarray(y_pred, np.float64)
    pos = (yt * yp).sum(axis=-1)
    neg = ((1.0 - yt) * yp).max(axis=-1)
    return np.maximum(neg - pos + 1.0, 0.0)


_FALLBACKS = {
    "binary_crossentropy": _fb_binary_crossentropy,
    "categorical_crossentropy": _fb_categorical_crossentropy,
    "mean_squared_error": _fb_mean_squared_error,
    "mean_absolute_error": _fb_mean_absolute_error,
    "mean_absolute_percentage_error": _fb_mean_absolute_percentage_error,
    "mean_squared_logarithmic_error": _fb_mean_squared_logarithmic_error,
    "log_cosh": _fb_log_cosh,
    "kl_divergence": _fb_kl_divergence,
    "poisson": _fb_poisson,
    "hinge": _fb_hinge,
    "squared_hinge": _fb_squared_hinge,
    "categorical_hinge": _fb_categorical_hinge,
}


def _loss_function(name: str) -> Optional[Callable]:
    """The per-sample loss ``name`` of fastckpt.losses, else its fallback here."""
    fn = getattr(losses, name, None)
    return fn if callable(fn) and not isinstance(fn, type) else _FALLBACKS.get(name)


def _loss_call(name: str):
    """A per-sample function calling fastckpt.losses.<name> (looked up at call time)."""
    def call(y_true, y_pred, **kwargs):
        return _loss_function(name)(y_true, y_pred, **kwargs)
    call.__name__ = name
    return call


def _sparse_ce(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """Per-sample sparse categorical cross-entropy over any leading axes (``ignore_class``
    entries come back with a 0/1 validity mask)."""
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred, np.float32)
    if axis not in (-1, yp.ndim - 1):
        raise NotImplementedError("SparseCategoricalCrossentropy: only axis=-1 is supported")
    if yt.ndim == yp.ndim and yt.shape[-1] == 1:
        yt = yt[..., 0]
    lead = yp.shape[:-1]
    flat_t = yt.reshape(-1)
    flat_p = np.ascontiguousarray(yp.reshape(-1, yp.shape[-1]))
    if ignore_class is None:
        return losses.sparse_categorical_crossentropy(flat_t, flat_p, from_logits=from_logits).reshape(lead)
    valid = flat_t != ignore_class
    out = losses.sparse_categorical_crossentropy(np.where(valid, flat_t, 0), flat_p,
                                                 from_logits=from_logits)
    return np.where(valid, out, 0.0).reshape(lead), valid.reshape(lead).astype(np.float64)


_sparse_ce.__name__ = "sparse_categorical_crossentropy"


def cosine_similarity(y_true, y_pred, axis=-1) -> np.ndarray:
    """Cosine of the angle between ``y_true`` and ``y_pred`` along ``axis``."""
    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.sqrt(np.maximum((x * x).sum(axis=axis, keepdims=True), 1e-12))
    return (unit(y_true) * unit(y_pred)).sum(axis=axis)


# --------------------------------------------------------------------------------------------------
# Accuracy metrics
# --------------------------------------------------------------------------------------------------

class Accuracy(MeanMetricWrapper):
    """Fraction of predictions exactly equal to the labels (``tf.keras.metrics.Accuracy``)."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(accuracy, name, dtype=dtype)


class BinaryAccuracy(MeanMetricWrapper):
    """Fraction of entries where ``y_pred > threshold`` matches the 0/1 label."""

    def __init__(self, name: str = "binary_accuracy", dtype=None, threshold: float = 0.5):
        super().__init__(_binary_matches, name, dtype=dtype, threshold=threshold)


class CategoricalAccuracy(MeanMetricWrapper):
    """Fraction of rows whose arg-max prediction is the one-hot label's class."""

    def __init__(self, name: str = "categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name, dtype=dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """Fraction of rows whose arg-max prediction equals the integer label.

    Example:
        >>> import numpy as np
        >>> m = SparseCategoricalAccuracy()
        >>> float(m([1, 0], np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)))
        1.0
    """

    def __init__(self, name: str = "sparse_categorical_accuracy", dtype=None):
        super().__init__(_sparse_matches, name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        pred = np.asarray(y_pred)
        labels = np.asarray(y_true)
        if (sample_weight is None and pred.ndim == 2 and pred.shape[1] > 0
                and np.issubdtype(pred.dtype, np.floating)
                and (labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1))):
            # The native kernel: one pass, no per-row temporaries.
            pred = np.ascontiguousarray(pred, np.float32)
            lab = _labels(labels, pred.shape[0], pred.shape[1])
            self.add_counts(ops.sparse_accuracy_count(pred, lab), pred.shape[0])
            return
        super().update_state(y_true, y_pred, sample_weight)

    def add_counts(self, correct: int, n: int) -> None:
        """Fold in counts computed elsewhere (the fused loss kernel counts them for free)."""
        self.total += float(correct)
        self.count += float(n)


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """Fraction of rows whose one-hot label's class is among the ``k`` highest scores."""

    def __init__(self, k: int = 5, name: str = "top_k_categorical_accuracy", dtype=None):
        super().__init__(top_k_categorical_accuracy, name, dtype=dtype, k=k)


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """Fraction of rows whose integer label is among the ``k`` highest scores."""

    def __init__(self, k: int = 5, name: str = "sparse_top_k_categorical_accuracy", dtype=None):
        super().__init__(sparse_top_k_categorical_accuracy, name, dtype=dtype, k=k)

    def _values(self, y_true, y_pred):
        return sparse_top_k_categorical_accuracy(_float(y_true), _float(y_pred), **self._fn_kwargs)


# --------------------------------------------------------------------------------------------------
# Regression and probabilistic metrics
# --------------------------------------------------------------------------------------------------

class MeanSquaredError(MeanMetricWrapper):
    """Mean of the per-sample mean squared error."""

    def __init__(self, name: str = "mean_squared_error", dtype=None):
        super().__init__(_loss_call("mean_squared_error"), name, dtype=dtype)


class MeanAbsoluteError(MeanMetricWrapper):
    """Mean of the per-sample mean absolute error."""

    def __init__(self, name: str = "mean_absolute_error", dtype=None):
        super().__init__(_loss_call("mean_absolute_error"), name, dtype=dtype)


class MeanAbsolutePercentageError(MeanMetricWrapper):
    """Mean of the per-sample mean absolute percentage error."""

    def __init__(self, name: str = "mean_absolute_percentage_error", dtype=None):
        super().__init__(_loss_call("mean_absolute_percentage_error"), name, dtype=dtype)


class MeanSquaredLogarithmicError(MeanMetricWrapper):
    """Mean of the per-sample mean squared logarithmic error."""

    def __init__(self, name: str = "mean_squared_logarithmic_error", dtype=None):
        super().__init__(_loss_call("mean_squared_logarithmic_error"), name, dtype=dtype)


class LogCoshError(MeanMetricWrapper):
    """Mean of the per-sample log-cosh error."""

    def __init__(self, name: str = "logcosh", dtype=None):
        super().__init__(_loss_call("log_cosh"), name, dtype=dtype)


class CosineSimilarity(MeanMetricWrapper):
    """Mean cosine similarity between labels and predictions along ``axis``."""

    def __init__(self, name: str = "cosine_similarity", dtype=None, axis: int = -1):
        super().__init__(cosine_similarity, name, dtype=dtype, axis=axis)


class KLDivergence(MeanMetricWrapper):
    """Mean Kullback-Leibler divergence between labels and predictions."""

    def __init__(self, name: str = "kullback_leibler_divergence", dtype=None):
        super().__init__(_loss_call("kl_divergence"), name, dtype=dtype)


class Poisson(MeanMetricWrapper):
    """Mean Poisson loss."""

    def __init__(self, name: str = "poisson", dtype=None):
        super().__init__(_loss_call("poisson"), name, dtype=dtype)


class Hinge(MeanMetricWrapper):
    """Mean hinge loss (0/1 labels are mapped to -1/1)."""

    def __init__(self, name: str = "hinge", dtype=None):
        super().__init__(_loss_call("hinge"), name, dtype=dtype)


class SquaredHinge(MeanMetricWrapper):
    """Mean squared hinge loss (0/1 labels are mapped to -1/1)."""

    def __init__(self, name: str = "squared_hinge", dtype=None):
        super().__init__(_loss_call("squared_hinge"), name, dtype=dtype)


class CategoricalHinge(MeanMetricWrapper):
    """Mean categorical hinge loss."""

    def __init__(self, name: str = "categorical_hinge", dtype=None):
        super().__init__(_loss_call("categorical_hinge"), name, dtype=dtype)


class RootMeanSquaredError(Mean):
    """Square root of the weighted mean of the squared errors."""

    def __init__(self, name: str = "root_mean_squared_error", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        yt, yp = _float(y_true).astype(np.float64), _float(y_pred).astype(np.float64)
        yp, yt = _align(yp, yt)
        super().update_state(np.square(yp - yt), sample_weight)

    def result(self):
        return np.float32(np.sqrt(self.total / self.count)) if self.count else np.float32(0.0)


class BinaryCrossentropy(MeanMetricWrapper):
    """Mean binary cross-entropy (``from_logits``, ``label_smoothing``)."""

    def __init__(self, name: str = "binary_crossentropy", dtype=None, from_logits: bool = False,
                 label_smoothing: float = 0.0):
        super().__init__(_loss_call("binary_crossentropy"), name, dtype=dtype,
                         from_logits=from_logits, label_smoothing=label_smoothing)


class CategoricalCrossentropy(MeanMetricWrapper):
    """Mean categorical cross-entropy of one-hot labels (``from_logits``, ``label_smoothing``)."""

    def __init__(self, name: str = "categorical_crossentropy", dtype=None, from_logits: bool = False,
                 label_smoothing: float = 0.0, axis: int = -1):
        super().__init__(_loss_call("categorical_crossentropy"), name, dtype=dtype,
                         from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)


class SparseCategoricalCrossentropy(MeanMetricWrapper):
    """Mean cross-entropy of integer labels (``from_logits``; ``ignore_class`` entries left out)."""

    def __init__(self, name: str = "sparse_categorical_crossentropy", dtype=None,
                 from_logits: bool = False, ignore_class: Optional[int] = None, axis: int = -1):
        super().__init__(_sparse_ce, name, dtype=dtype, from_logits=from_logits,
                         ignore_class=ignore_class, axis=axis)

    def _values(self, y_true, y_pred):
        return _sparse_ce(np.asarray(y_true), _float(y_pred), **self._fn_kwargs)


class R2Score(Metric):
    """Coefficient of determination over ``(batch, outputs)`` data, as Keras defines it:
    ``class_aggregation`` in None / ``'uniform_average'`` / ``'variance_weighted_average'``, and an
    adjusted score for ``num_regressors > 0``."""

    def __init__(self, class_aggregation: Optional[str] = "uniform_average", num_regressors: int = 0,
                 name: str = "r2_score", dtype=None):
        valid = (None, "uniform_average", "variance_weighted_average")
        if class_aggregation not in valid:
            raise ValueError(f"Invalid value for argument `class_aggregation`. Expected one of "
                             f"{valid}. Received: class_aggregation={class_aggregation}")
        if num_regressors < 0:
            raise ValueError(f"Invalid value for argument `num_regressors`. Expected a value >= 0. "
                             f"Received: num_regressors={num_regressors}")
        self.class_aggregation = class_aggregation
        self.num_regressors = int(num_regressors)
        self._classes = None
        super().__init__(name=name, dtype=dtype)

    def reset_state(self) -> None:
        n = 0 if self._classes is None else self._classes
        self.sum = np.zeros(n)
        self.squared_sum = np.zeros(n)
        self.total_mse = np.zeros(n)
        self.count = np.zeros(n)
        self.num_samples = 0

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        yt = _float(y_true).astype(np.float64)
        yp = _float(y_pred).astype(np.float64)
        if yt.ndim != 2 or yp.ndim != 2:
            raise ValueError(f"R2Score expects 2D inputs with shape (batch_size, output_dim). "
                             f"Received input shapes: y_pred.shape={yp.shape} and "
                             f"y_true.shape={yt.shape}.")
        if yt.shape != yp.shape:
            raise ValueError(f"R2Score: y_true of shape {yt.shape} does not match y_pred of shape "
                             f"{yp.shape}")
        if self._classes is None:
            self._classes = yp.shape[1]
            self.reset_state()
        elif yp.shape[1] != self._classes:
            raise ValueError(f"R2Score: expected {self._classes} outputs, got y_pred of shape "
                             f"{yp.shape}")
        w = np.ones(1) if sample_weight is None else _float(sample_weight).astype(np.float64)
        if w.ndim == 1:
            w = w[:, None]
        try:
            w = np.broadcast_to(w, yt.shape)
        except ValueError:
            raise ValueError(f"R2Score: expected sample_weight broadcastable to {yt.shape}, got "
                             f"shape {np.shape(sample_weight)}") from None
        wy = yt * w
        self.sum = self.sum + wy.sum(axis=0)
        self.squared_sum = self.squared_sum + (yt * wy).sum(axis=0)
        self.total_mse = self.total_mse + (np.square(yt - yp) * w).sum(axis=0)
        self.count = self.count + w.sum(axis=0)
        self.num_samples += int(yt.size)

    def result(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = self.sum / self.count
            total = self.squared_sum - self.sum * mean
            raw = 1.0 - self.total_mse / total
            raw = np.where(np.isinf(raw), 0.0, raw)
            if self.class_aggregation == "uniform_average":
                score = raw.mean() if raw.size else np.float64(np.nan)
            elif self.class_aggregation == "variance_weighted_average":
                score = (total * raw).sum() / total.sum()
            else:
                score = raw
        if self.num_regressors:
            n, p = self.num_samples, self.num_regressors
            if p > n - 1:
                warnings.warn("More independent predictors than datapoints in adjusted R2 score. "
                              "Falling back to standard R2 score.", stacklevel=2)
            elif p == n - 1:
                warnings.warn("Division by zero in Adjusted R2 score. Falling back to standard R2 "
                              "score.", stacklevel=2)
            else:
                score = 1.0 - (1.0 - score) * (n - 1.0) / (n - p - 1.0)
        return np.asarray(score, np.float32) if np.ndim(score) else np.float32(score)

    def get_config(self):
        config = super().get_config()
        config.update({"class_aggregation": self.class_aggregation,
                       "num_regressors": self.num_regressors})
        return config


# --------------------------------------------------------------------------------------------------
# Confusion-matrix metrics
# --------------------------------------------------------------------------------------------------

def _even(thresholds) -> bool:
    """tf_keras' test for thresholds i/(n-1), which selects its bucketing update."""
    t = np.asarray(thresholds, np.float64)
    n = len(t)
    if n < 3:
        return False
    return bool(np.allclose(t, np.arange(n, dtype=np.float32) / (n - 1), atol=EPSILON))


def _check_thresholds(thresholds, default):
    if thresholds is None:
        return [default]
    values = list(thresholds) if isinstance(thresholds, (list, tuple, np.ndarray)) else [thresholds]
    bad = [t for t in values if t is None or t < 0 or t > 1]
    if bad:
        raise ValueError(f"Threshold values must be in [0, 1]. Received: {bad}")
    return [float(t) for t in values]


def _filter_top_k(x: np.ndarray, k: int) -> np.ndarray:
    idx = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    keep = np.zeros(x.shape, bool)
    np.put_along_axis(keep, idx, True, axis=-1)
    return np.where(keep, x, np.float32(NEG_INF)).astype(np.float32)


def _confusion_counts(y_true, y_pred, thresholds: np.ndarray, even: bool, sample_weight=None,
                      top_k=None, class_id=None, multi_label: bool = False, label_weights=None):
    """Weighted (tp, fp, total positives, total negatives) per threshold — shape (T,) or, with
    ``multi_label``, (T, labels) — in one bincount pass: ``y_pred > thresholds[j]`` is positive."""
    yt = _float(y_true)
    yp = _float(y_pred)
    if sample_weight is None:
        yp, yt = _align(yp, yt)
        w = None
    else:
        w = _float(sample_weight)
        yp, yt = _align(yp, yt)
        if w.ndim:
            if w.ndim - yp.ndim == 1 and w.shape[-1] == 1:
                w = w[..., 0]
            elif yp.ndim - w.ndim == 1:
                w = w[..., None]
    if yt.shape != yp.shape:
        raise ValueError(f"Expected y_true of the shape of y_pred {yp.shape}, got {yt.shape}")
    if top_k is not None:
        yp = _filter_top_k(yp, top_k)
    if class_id is not None:
        if yp.ndim == 0 or not 0 <= class_id < yp.shape[-1]:
            raise ValueError(f"class_id={class_id} is out of range for y_pred of shape {yp.shape}")
        yt = yt[..., class_id:class_id + 1]
        yp = yp[..., class_id:class_id + 1]
        if w is not None and w.ndim and w.shape[-1] != 1:
            w = w[..., class_id:class_id + 1]
    weights = np.ones(yp.shape) if w is None else _weights_for(yp, w)
    if label_weights is not None:
        weights = weights * np.broadcast_to(np.asarray(label_weights, np.float64), yp.shape)
    pos = yt != 0
    t = len(thresholds)
    if multi_label:
        if yp.ndim != 2:
            raise ValueError(f"`y_pred` must have rank 2 when `multi_label=True`. Found rank "
                             f"{yp.ndim}. Full shape received for `y_pred`: {yp.shape}")
        n_labels = yp.shape[1]
    else:
        yp, pos, weights = yp.reshape(-1, 1), pos.reshape(-1, 1), weights.reshape(-1, 1)
        n_labels = 1
    if even:
        # tf_keras' bucketing: bucket b = ceil(p * (T-1)) - 1 counts for thresholds 0..b.
        p = np.clip(yp, np.float32(0), np.float32(1))
        bucket = np.ceil(p * np.float32(t - 1)).astype(np.int64) - 1
        if thresholds[0] < 0.0 or thresholds[-1] > 1.0:
            bucket = np.maximum(bucket, 0)
        above = bucket + 1               # thresholds strictly below: 0..bucket
        above = np.where(bucket < 0, 0, above)
    else:
        order = np.argsort(thresholds, kind="stable")
        above = np.searchsorted(np.asarray(thresholds, np.float32)[order], yp, side="left")
    # above[i] = how many (sorted) thresholds prediction i exceeds; accumulate per label.
    offs = above + (t + 1) * np.arange(n_labels)[None, :]
    tp_b = np.bincount(offs[pos], weights=weights[pos], minlength=(t + 1) * n_labels)
    fp_b = np.bincount(offs[~pos], weights=weights[~pos], minlength=(t + 1) * n_labels)
    tp_b = tp_b.reshape(n_labels, t + 1)
    fp_b = fp_b.reshape(n_labels, t + 1)
    # count for threshold j (sorted): entries exceeding more than j thresholds.
    tp = np.cumsum(tp_b[:, ::-1], axis=1)[:, ::-1][:, 1:].T
    fp = np.cumsum(fp_b[:, ::-1], axis=1)[:, ::-1][:, 1:].T
    if not even:
        inv = np.empty(t, np.int64)
        inv[order] = np.arange(t)
        tp, fp = tp[inv], fp[inv]
    tot_pos = np.where(pos, weights, 0.0).sum(axis=0)
    tot_neg = np.where(~pos, weights, 0.0).sum(axis=0)
    if not multi_label:
        tp, fp, tot_pos, tot_neg = tp[:, 0], fp[:, 0], tot_pos[0], tot_neg[0]
    return tp, fp, tot_pos, tot_neg


def _div(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


class _ConfusionMetric(Metric):
    """Shared state and update: tp/fp/tn/fn per threshold (float64 arrays)."""

    _thresholds: list
    _top_k = None
    _class_id = None

    def reset_state(self) -> None:
        n = len(self._thresholds)
        self.true_positives = np.zeros(n)
        self.false_positives = np.zeros(n)
        self.true_negatives = np.zeros(n)
        self.false_negatives = np.zeros(n)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        tp, fp, pos, neg = _confusion_counts(
            y_true, y_pred, np.asarray(self._thresholds, np.float32), _even(self._thresholds),
            sample_weight, top_k=self._top_k, class_id=self._class_id)
        self.true_positives = self.true_positives + tp
        self.false_positives = self.false_positives + fp
        self.true_negatives = self.true_negatives + (neg - fp)
        self.false_negatives = self.false_negatives + (pos - tp)

    def _one(self, values):
        values = np.asarray(values, np.float32)
        return np.float32(values[0]) if len(self._thresholds) == 1 else values


class _ConfusionCount(_ConfusionMetric):
    _attr = ""

    def __init__(self, thresholds=None, name: Optional[str] = None, dtype=None):
        self.init_thresholds = thresholds
        self._thresholds = _check_thresholds(thresholds, 0.5)
        super().__init__(name=name, dtype=dtype)

    @property
    def thresholds(self):
        return list(self._thresholds)

    def result(self):
        return self._one(getattr(self, self._attr))

    def get_config(self):
        config = super().get_config()
        config["thresholds"] = self.init_thresholds
        return config


class TruePositives(_ConfusionCount):
    """Weighted count of positive labels predicted above each threshold."""
    _attr = "true_positives"


class FalsePositives(_ConfusionCount):
    """Weighted count of negative labels predicted above each threshold."""
    _attr = "false_positives"


class TrueNegatives(_ConfusionCount):
    """Weighted count of negative labels predicted at or below each threshold."""
    _attr = "true_negatives"


class FalseNegatives(_ConfusionCount):
    """Weighted count of positive labels predicted at or below each threshold."""
    _attr = "false_negatives"


class _PrecisionRecall(_ConfusionMetric):
    def __init__(self, thresholds=None, top_k: Optional[int] = None, class_id: Optional[int] = None,
                 name: Optional[str] = None, dtype=None):
        self.init_thresholds = thresholds
        self._top_k = top_k
        self._class_id = class_id
        self._thresholds = _check_thresholds(thresholds, 0.5 if top_k is None else NEG_INF)
        super().__init__(name=name, dtype=dtype)

    top_k = property(lambda self: self._top_k)
    class_id = property(lambda self: self._class_id)
    thresholds = property(lambda self: list(self._thresholds))

    def get_config(self):
        config = super().get_config()
        config.update({"thresholds": self.init_thresholds, "top_k": self._top_k,
                       "class_id": self._class_id})
        return config


class Precision(_PrecisionRecall):
    """tp / (tp + fp) per threshold (``thresholds``, ``top_k``, ``class_id``)."""

    def result(self):
        return self._one(_div(self.true_positives, self.true_positives + self.false_positives))


class Recall(_PrecisionRecall):
    """tp / (tp + fn) per threshold (``thresholds``, ``top_k``, ``class_id``)."""

    def result(self):
        return self._one(_div(self.true_positives, self.true_positives + self.false_negatives))


class _AtValue(_ConfusionMetric):
    """Best value of one rate subject to a floor on another, over ``num_thresholds`` thresholds."""

    _arg = ""

    def __init__(self, value: float, num_thresholds: int = 200, class_id: Optional[int] = None,
                 name: Optional[str] = None, dtype=None):
        if value < 0 or value > 1:
            raise ValueError(f"Argument `{self._arg}` must be in the range [0, 1]. "
                             f"Received: {self._arg}={value}")
        if num_thresholds <= 0:
            raise ValueError(f"Argument `num_thresholds` must be an integer > 0. "
                             f"Received: num_thresholds={num_thresholds}")
        setattr(self, self._arg, value)
        self.value = value
        self.num_thresholds = int(num_thresholds)
        self._class_id = class_id
        if num_thresholds == 1:
            self._thresholds = [0.5]
        else:
            self._thresholds = [0.0] + [(i + 1) * 1.0 / (num_thresholds - 1)
                                        for i in range(num_thresholds - 2)] + [1.0]
        super().__init__(name=name, dtype=dtype)

    class_id = property(lambda self: self._class_id)
    thresholds = property(lambda self: list(self._thresholds))

    def _rates(self):
        tp, fp = self.true_positives, self.false_positives
        tn, fn = self.true_negatives, self.false_negatives
        return {"recall": _div(tp, tp + fn), "precision": _div(tp, tp + fp),
                "specificity": _div(tn, tn + fp)}

    def _best(self, constrained, dependent):
        feasible = constrained >= self.value
        return np.float32(dependent[feasible].max()) if feasible.any() else np.float32(0.0)

    def get_config(self):
        config = super().get_config()
        config.update({"class_id": self._class_id, "num_thresholds": self.num_thresholds,
                       self._arg: self.value})
        return config


class PrecisionAtRecall(_AtValue):
    """Best precision among the thresholds whose recall is at least ``recall``."""
    _arg = "recall"

    def __init__(self, recall: float, num_thresholds: int = 200, class_id: Optional[int] = None,
                 name: Optional[str] = None, dtype=None):
        super().__init__(recall, num_thresholds, class_id, name, dtype)

    def result(self):
        r = self._rates()
        return self._best(r["recall"], r["precision"])


class RecallAtPrecision(_AtValue):
    """Best recall among the thresholds whose precision is at least ``precision``."""
    _arg = "precision"

    def __init__(self, precision: float, num_thresholds: int = 200, class_id: Optional[int] = None,
                 name: Optional[str] = None, dtype=None):
        super().__init__(precision, num_thresholds, class_id, name, dtype)

    def result(self):
        r = self._rates()
        return self._best(r["precision"], r["recall"])


class SensitivityAtSpecificity(_AtValue):
    """Best sensitivity (recall) among the thresholds whose specificity is at least ``specificity``."""
    _arg = "specificity"

    def __init__(self, specificity: float, num_thresholds: int = 200, class_id: Optional[int] = None,
                 name: Optional[str] = None, dtype=None):
        super().__init__(specificity, num_thresholds, class_id, name, dtype)

    def result(self):
        r = self._rates()
        return self._best(r["specificity"], r["recall"])


class SpecificityAtSensitivity(_AtValue):
    """Best specificity among the thresholds whose sensitivity (recall) is at least ``sensitivity``."""
    _arg = "sensitivity"

    def __init__(self, sensitivity: float, num_thresholds: int = 200, class_id: Optional[int] = None,
                 name: Optional[str] = None, dtype=None):
        super().__init__(sensitivity, num_thresholds, class_id, name, dtype)

    def result(self):
        r = self._rates()
        return self._best(r["recall"], r["specificity"])


class AUC(Metric):
    """Area under the ROC or PR curve, from confusion counts at ``num_thresholds`` thresholds.

    ``summation_method``: ``'interpolation'`` (trapezoids for ROC; for PR, Keras' interpolation of
    precision between thresholds), ``'minoring'`` or ``'majoring'``. ``multi_label`` keeps one curve
    per label and averages them (weighted by ``label_weights``); otherwise ``label_weights`` weight
    the flattened entries.

    Example:
        >>> m = AUC(num_thresholds=3)
        >>> float(m([0, 0, 1, 1], [0.0, 0.5, 0.3, 0.9]))
        0.75
    """

    _CURVES = ("ROC", "PR")
    _SUMMATIONS = ("interpolation", "minoring", "majoring")

    def __init__(self, num_thresholds: int = 200, curve: str = "ROC",
                 summation_method: str = "interpolation", name: Optional[str] = None, dtype=None,
                 thresholds=None, multi_label: bool = False, num_labels: Optional[int] = None,
                 label_weights=None, from_logits: bool = False):
        curve_s = str(getattr(curve, "value", curve))
        if curve_s.upper() not in self._CURVES:
            raise ValueError(f'Invalid AUC curve value: "{curve}". Expected values are '
                             f'{list(self._CURVES)}')
        summ = str(getattr(summation_method, "value", summation_method)).lower()
        if summ not in self._SUMMATIONS:
            raise ValueError(f'Invalid AUC summation method value: "{summation_method}". Expected '
                             f'values are {list(self._SUMMATIONS)}')
        self._init_from_thresholds = thresholds is not None
        if thresholds is not None:
            inner = sorted(_check_thresholds(thresholds, 0.5))
            self.num_thresholds = len(inner) + 2
            self._even = _even([0.0] + inner + [1.0])
        else:
            if num_thresholds <= 1:
                raise ValueError(f"Argument `num_thresholds` must be an integer > 1. "
                                 f"Received: num_thresholds={num_thresholds}")
            self.num_thresholds = int(num_thresholds)
            inner = [(i + 1) * 1.0 / (num_thresholds - 1) for i in range(num_thresholds - 2)]
            self._even = True
        self._thresholds = [0.0 - EPSILON] + inner + [1.0 + EPSILON]
        self.curve = curve_s.upper()
        self.summation_method = summ
        self.multi_label = bool(multi_label)
        self.num_labels = num_labels
        if label_weights is not None:
            lw = np.asarray(label_weights, np.float32)
            if (lw < 0).any():
                raise ValueError("All values of `label_weights` must be non-negative.")
            self.label_weights = lw
        else:
            self.label_weights = None
        self._from_logits = bool(from_logits)
        if not self.multi_label and num_labels:
            raise ValueError("`num_labels` is needed only when `multi_label` is True.")
        self._num_labels = num_labels if self.multi_label else None
        super().__init__(name=name, dtype=dtype)

    @property
    def thresholds(self):
        return list(self._thresholds)

    def reset_state(self) -> None:
        shape = (self.num_thresholds,) if not self.multi_label else \
            (self.num_thresholds, self._num_labels or 0)
        self.true_positives = np.zeros(shape)
        self.false_positives = np.zeros(shape)
        self.true_negatives = np.zeros(shape)
        self.false_negatives = np.zeros(shape)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        yp = _float(y_pred)
        if self.multi_label:
            if yp.ndim != 2:
                raise ValueError(f"`y_pred` must have rank 2 when `multi_label=True`. Found rank "
                                 f"{yp.ndim}. Full shape received for `y_pred`: {yp.shape}")
            if not self._num_labels:
                self._num_labels = yp.shape[1]
                self.reset_state()
            elif yp.shape[1] != self._num_labels:
                raise ValueError(f"Number of labels is not consistent: AUC has {self._num_labels}, "
                                 f"y_pred has shape {yp.shape}")
        if self.label_weights is not None and yp.shape[-1:] != self.label_weights.shape:
            raise ValueError(f"Number of labels is not consistent: label_weights has shape "
                             f"{self.label_weights.shape}, y_pred {yp.shape}")
        if self._from_logits:
            yp = (1.0 / (1.0 + np.exp(-yp.astype(np.float64)))).astype(np.float32)
        tp, fp, pos, neg = _confusion_counts(
            y_true, yp, np.asarray(self._thresholds, np.float32), self._even, sample_weight,
            multi_label=self.multi_label,
            label_weights=None if self.multi_label else self.label_weights)
        self.true_positives = self.true_positives + tp
        self.false_positives = self.false_positives + fp
        self.true_negatives = self.true_negatives + (neg - fp)
        self.false_negatives = self.false_negatives + (pos - tp)

    def _by_label(self, per):
        if not self.multi_label:
            return np.float32(per.sum())
        by_label = per.sum(axis=0)
        if self.label_weights is None:
            return np.float32(by_label.mean()) if by_label.size else np.float32(0.0)
        lw = self.label_weights.astype(np.float64)
        return np.float32(_div((by_label * lw).sum(), lw.sum()))

    def _interpolate_pr_auc(self):
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _div(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        ratio = np.where((p[:-1] > 0) & (p[1:] > 0), _div(p[:-1], np.maximum(p[1:], 0)), 1.0)
        with np.errstate(divide="ignore"):
            log_ratio = np.log(np.where(ratio > 0, ratio, 1.0))
        inc = _div(slope * (dtp + intercept * log_ratio), np.maximum(tp[1:] + fn[1:], 0))
        return self._by_label(inc)

    def result(self):
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolate_pr_auc()
        tp, fp = self.true_positives, self.false_positives
        tn, fn = self.true_negatives, self.false_negatives
        recall = _div(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _div(fp, fp + tn), recall
        else:
            x, y = recall, _div(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return self._by_label((x[:-1] - x[1:]) * heights)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_thresholds": self.num_thresholds, "curve": self.curve,
            "summation_method": self.summation_method, "multi_label": self.multi_label,
            "num_labels": self.num_labels,
            "label_weights": None if self.label_weights is None else self.label_weights.tolist(),
            "from_logits": self._from_logits,
        })
        if self._init_from_thresholds:
            config["thresholds"] = self._thresholds[1:-1]
        return config


# --------------------------------------------------------------------------------------------------
# Lookup and serialization
# --------------------------------------------------------------------------------------------------

_CLASSES = {cls.__name__: cls for cls in (
    Mean, Sum, MeanMetricWrapper, Accuracy, BinaryAccuracy, CategoricalAccuracy,
    SparseCategoricalAccuracy, TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy, AUC, Precision,
    Recall, TruePositives, FalsePositives, TrueNegatives, FalseNegatives, PrecisionAtRecall,
    RecallAtPrecision, SensitivityAtSpecificity, SpecificityAtSensitivity, MeanSquaredError,
    RootMeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredLogarithmicError,
    LogCoshError, CosineSimilarity, R2Score, BinaryCrossentropy, CategoricalCrossentropy,
    SparseCategoricalCrossentropy, KLDivergence, Poisson, Hinge, SquaredHinge, CategoricalHinge)}
_CLASS_ALIASES = {"KLD": KLDivergence}
#: Every built-in metric class by name (what a config's ``class_name`` may say).
BUILTIN_METRICS = dict(_CLASSES)

_FUNCTIONS: Dict[str, Callable] = {
    "accuracy": accuracy, "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "top_k_categorical_accuracy": top_k_categorical_accuracy,
    "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy,
    "cosine_similarity": cosine_similarity,
    "sparse_categorical_crossentropy": _sparse_ce,
}
for _name in ("binary_crossentropy", "categorical_crossentropy", "mean_squared_error",
              "mean_absolute_error", "mean_absolute_percentage_error",
              "mean_squared_logarithmic_error", "log_cosh", "kl_divergence", "poisson", "hinge",
              "squared_hinge", "categorical_hinge"):
    _FUNCTIONS[_name] = _loss_call(_name)
_FUNCTION_ALIASES = {
    "mse": "mean_squared_error", "MSE": "mean_squared_error", "mae": "mean_absolute_error",
    "MAE": "mean_absolute_error", "mape": "mean_absolute_percentage_error",
    "MAPE": "mean_absolute_percentage_error", "msle": "mean_squared_logarithmic_error",
    "MSLE": "mean_squared_logarithmic_error", "bce": "binary_crossentropy",
    "BCE": "binary_crossentropy", "logcosh": "log_cosh", "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence", "cosine_proximity": "cosine_similarity",
}


def _valid_names():
    return sorted(set(_CLASSES) | set(_CLASS_ALIASES) | set(_FUNCTIONS) | set(_FUNCTION_ALIASES)
                  | {"acc", "crossentropy", "ce"})


def _loss_kind(loss) -> Optional[str]:
    """'binary', 'sparse' or 'categorical' for a cross-entropy-like loss, else None."""
    if loss is None:
        return None
    names = [type(loss).__name__, getattr(loss, "name", None) or "", getattr(loss, "__name__", "")]
    if isinstance(loss, str):
        names.append(loss)
    text = " ".join(n.lower() for n in names if isinstance(n, str))
    if "sparse" in text:
        return "sparse"
    if "binary" in text or "bce" in text.split():
        return "binary"
    if "categorical" in text:
        return "categorical"
    return None


def _by_shapes(kind_fns, y_true, y_pred):
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    yt_last = yt.shape[-1] if yt.ndim else None
    yp_last = yp.shape[-1] if yp.ndim else None
    if yp_last == 1:
        return kind_fns["binary"]
    if yt.ndim < yp.ndim or (yt_last == 1 and (yp_last or 0) > 1):
        return kind_fns["sparse"]
    return kind_fns["categorical"]


class _ByShapes:
    """The per-sample function behind an unresolved 'accuracy'/'crossentropy': on its first call
    it picks the binary/sparse/categorical variant from the batch shapes, as tf_keras does when
    it builds its metrics, and keeps it (its ``__name__`` is then the chosen function's)."""

    def __init__(self, kind_fns: Dict[str, Callable], label: str):
        self.kind_fns = kind_fns
        self.label = label
        self.saved_name = "acc" if kind_fns is _ACC else "crossentropy"
        self.fn: Optional[Callable] = None

    @property
    def __name__(self) -> str:
        # Unresolved, it saves under a name that reloads as another _ByShapes ('acc', not
        # 'accuracy', which names tf_keras' exact-equality function).
        if self.fn is None:
            return self.saved_name
        return self.fn.__name__

    def __call__(self, y_true, y_pred):
        if self.fn is None:
            self.fn = _by_shapes(self.kind_fns, y_true, y_pred)
        return self.fn(y_true, y_pred)


_ACC = {"binary": binary_accuracy, "sparse": sparse_categorical_accuracy,
        "categorical": categorical_accuracy}
_CE = {"binary": _FUNCTIONS["binary_crossentropy"], "sparse": _sparse_ce,
       "categorical": _FUNCTIONS["categorical_crossentropy"]}


def _resolve_auto(name: str, loss, output_shape) -> Metric:
    is_acc = name.lower() in ("accuracy", "acc")
    kind = None
    if output_shape is not None and len(output_shape) and output_shape[-1] == 1:
        kind = "binary"
    else:
        kind = _loss_kind(loss)
        if kind == "binary" and output_shape is not None and len(output_shape) > 1:
            kind = "categorical"  # tf_keras: multi-label outputs (y_true of their shape)
    if kind is None:
        return MeanMetricWrapper(_ByShapes(_ACC if is_acc else _CE, name), name=name)
    if is_acc:
        cls = {"binary": BinaryAccuracy, "sparse": SparseCategoricalAccuracy,
               "categorical": CategoricalAccuracy}[kind]
    else:
        cls = {"binary": BinaryCrossentropy, "sparse": SparseCategoricalCrossentropy,
               "categorical": CategoricalCrossentropy}[kind]
    return cls(name=name)


def get(identifier, loss=None, output_shape=None) -> Metric:
    """Resolve a metric: an instance, a class, a name, a config dict, a function, or a loss.

    ``'accuracy'``/``'acc'`` (and ``'crossentropy'``/``'ce'``) mean the variant that fits the
    output, as in tf_keras: binary for a single-unit output (``output_shape[-1] == 1``), sparse
    categorical for a sparse categorical loss, categorical otherwise; with neither the loss nor the
    shape to go by, the choice is made from the shapes of each batch. The metric keeps the name as
    written. A function is wrapped in a ``MeanMetricWrapper`` named after it; a ``Loss`` object
    becomes the running mean of its batch value, named after the loss.
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, str):
        if identifier.lower() in ("accuracy", "acc", "crossentropy", "ce"):
            return _resolve_auto(identifier, loss, output_shape)
        cls = _CLASSES.get(identifier) or _CLASS_ALIASES.get(identifier)
        if cls is not None and cls is not MeanMetricWrapper:
            return cls()
        fname = _FUNCTION_ALIASES.get(identifier, identifier)
        fn = _FUNCTIONS.get(fname)
        if fn is not None:
            return MeanMetricWrapper(fn, name=identifier)
        raise ValueError(f"Unknown metric {identifier!r}; expected one of {_valid_names()}")
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, losses.Loss):
        return MeanMetricWrapper(identifier, name=_fn_name(identifier))
    if identifier is losses.sparse_categorical_crossentropy:
        return MeanMetricWrapper(_sparse_ce, name="sparse_categorical_crossentropy")
    if callable(identifier):
        name = getattr(identifier, "__name__", None) or _snake(type(identifier).__name__)
        return MeanMetricWrapper(identifier, name=name)
    raise TypeError(f"Expected a metric name, class, config dict, function or Metric, got "
                    f"{identifier!r:.80}")


def serialize(metric: Metric) -> dict:
    """tf_keras' record of a metric: ``{'module', 'class_name', 'config', 'registered_name'}``."""
    return {"module": "keras.metrics", "class_name": type(metric).__name__,
            "config": metric.get_config(), "registered_name": None}


def deserialize(config: dict, custom_objects: Any = None) -> Metric:
    """Rebuild a metric from ``serialize``'s record (or a bare name)."""
    if isinstance(config, str):
        return get(config)
    if not isinstance(config, dict):
        raise TypeError(f"Expected a metric config dict, got {config!r:.80}")
    name = config.get("class_name")
    if name == "function" and isinstance(config.get("config"), str):
        return get(config["config"])
    cls = (custom_objects or {}).get(name) or _CLASSES.get(name)
    if cls is None:
        raise ValueError(f"Unknown metric class {name!r}; expected one of {sorted(_CLASSES)}")
    return cls.from_config(dict(config.get("config") or {}))
