"""Metrics, shaped like ``tf.keras.metrics``: stateful ``update_state`` / ``result``."""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Union

import numpy as np

from fastckpt import ops
from fastckpt.losses import _labels

__all__ = ["Metric", "Mean", "SparseCategoricalAccuracy", "Accuracy", "get", "serialize",
           "deserialize", "sparse_categorical_accuracy"]


class Metric:
    def __init__(self, name: Optional[str] = None, dtype=None):
        self.name = name or type(self).__name__.lower()
        self.dtype = "float32"
        self.reset_state()

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0.0

    reset_states = reset_state

    # The Trainer evaluates validation data between training steps without disturbing the running
    # training metrics: it saves a metric's state and puts it back.
    def _get_state(self) -> Dict[str, Any]:
        return copy.deepcopy(vars(self))

    def _set_state(self, state: Dict[str, Any]) -> None:
        vars(self).update(copy.deepcopy(state))

    def update_state(self, *args, **kwargs) -> None:
        raise NotImplementedError

    def result(self) -> np.float32:
        return np.float32(self.total / self.count) if self.count else np.float32(0.0)

    def __call__(self, *args, **kwargs):
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Metric":
        return cls(**config)


class Mean(Metric):
    """Weighted running mean of the values it is given."""

    def __init__(self, name: str = "mean", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, values, sample_weight=None) -> None:
        v = np.asarray(values, np.float64)
        if sample_weight is None:
            self.total += float(v.sum())
            self.count += float(v.size)
        else:
            w = np.broadcast_to(np.asarray(sample_weight, np.float64), v.shape)
            self.total += float((v * w).sum())
            self.count += float(w.sum())


class SparseCategoricalAccuracy(Metric):
    """Fraction of rows whose arg-max prediction equals the integer label.

    Example:
        >>> import numpy as np
        >>> m = SparseCategoricalAccuracy()
        >>> float(m([1, 0], np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)))
        1.0
    """

    def __init__(self, name: str = "sparse_categorical_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        if sample_weight is not None:
            raise NotImplementedError("sample_weight is not supported yet")
        pred = np.ascontiguousarray(y_pred, np.float32)
        if pred.ndim != 2:
            raise ValueError(f"Expected predictions of shape (batch, classes), got {pred.shape}")
        labels = _labels(y_true, pred.shape[0], pred.shape[1])
        self.add_counts(ops.sparse_accuracy_count(pred, labels), pred.shape[0])

    def add_counts(self, correct: int, n: int) -> None:
        """Fold in counts computed elsewhere (the fused loss kernel counts them for free)."""
        self.total += float(correct)
        self.count += float(n)


class Accuracy(Metric):
    """Fraction of predictions exactly equal to the labels (``tf.keras.metrics.Accuracy``)."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        t = np.asarray(y_true)
        p = np.asarray(y_pred)
        if t.shape != p.shape:
            t = np.broadcast_to(t.reshape(t.shape + (1,) * (p.ndim - t.ndim)), p.shape) \
                if t.ndim < p.ndim else t
        eq = (p == t).astype(np.float64)
        self.total += float(eq.sum())
        self.count += float(eq.size)


def sparse_categorical_accuracy(y_true, y_pred) -> np.ndarray:
    pred = np.asarray(y_pred, np.float32)
    labels = _labels(y_true, pred.shape[0], pred.shape[1])
    return (np.argmax(pred, axis=-1) == labels).astype(np.float32)


_BY_NAME = {
    "SparseCategoricalAccuracy": SparseCategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "Accuracy": Accuracy,
    "Mean": Mean,
}


def get(identifier: Union[str, dict, Metric], loss=None) -> Metric:
    """Resolve a metric. ``'accuracy'``/``'acc'`` mean the accuracy that fits the loss, as in
    Keras: with a sparse categorical loss, sparse categorical accuracy, still named as given."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        if identifier in ("accuracy", "acc"):
            return SparseCategoricalAccuracy(name=identifier)
        cls = _BY_NAME.get(identifier)
        if cls is None:
            raise ValueError(f"Unknown metric {identifier!r}; expected 'accuracy', 'acc' or one of "
                             f"{sorted(_BY_NAME)}")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if identifier is sparse_categorical_accuracy:
        return SparseCategoricalAccuracy()
    raise TypeError(f"Expected a metric name, config dict or Metric, got {identifier!r}")


def serialize(metric: Metric) -> dict:
    return {"class_name": type(metric).__name__, "config": metric.get_config()}


def deserialize(config: dict, custom_objects: Any = None) -> Metric:
    name = config.get("class_name")
    cls = _BY_NAME.get(name) or (custom_objects or {}).get(name)
    if cls is None:
        raise ValueError(f"Unknown metric class {name!r}; expected one of {sorted(_BY_NAME)}")
    return cls.from_config(config.get("config", {}))
