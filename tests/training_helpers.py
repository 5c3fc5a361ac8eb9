"""Test-local pieces that speak the Trainer's protocols: a mean-squared-error ``Loss`` (through
``_fwd_bwd``), a weighted mean-absolute-error metric, an L2 regularizer, a non-negativity
constraint, and a two-head model (one trunk, two Dense outputs) implementing the graph protocol.
They stand in for the library's own classes so the loop is tested on its own."""

import numpy as np

from fastckpt import keras
from fastckpt.layers.dense import Dense
from fastckpt.losses import Loss
from fastckpt.metrics import Metric
from fastckpt.models.model import Model


class MSE(Loss):
    """Mean over the last axis of (y - p)**2, per row."""

    def __init__(self, reduction="auto", name="mse"):
        super().__init__(reduction=reduction, name=name)
        self.calls = 0

    def call(self, y_true, y_pred):
        return np.mean((np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)) ** 2,
                       axis=-1)

    def _prepare_targets(self, y, n, output_shape, what="y"):
        arr = np.asarray(y)
        want = (n,) + tuple(output_shape[1:])
        if arr.shape != want:
            raise ValueError(f"Expected {what} of shape {want}, got {arr.shape}")
        return np.ascontiguousarray(arr, np.float32)

    def _fwd_bwd(self, y_true, y_pred, sample_weight, grad, grad_scale, logits):
        assert not logits
        self.calls += 1
        d = y_pred.astype(np.float64) - y_true
        per = np.mean(d * d, axis=-1)
        w = np.ones(len(per)) if sample_weight is None else sample_weight.astype(np.float64)
        if grad is not None:
            grad[...] = (grad_scale * 2.0 / d.shape[-1]) * d * w[:, None]
        return float(np.sum(per * w))


class MAE(Metric):
    """Weighted mean over samples of mean |y - p| (tf.keras' 'mae' metric)."""

    def __init__(self, name="mae", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        per = np.mean(np.abs(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)),
                      axis=-1)
        w = np.ones(len(per)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        self.total += float(np.sum(per * w))
        self.count += float(np.sum(w))


class Probe(Metric):
    """Records the predictions it is given (to see what the loop hands metrics)."""

    def __init__(self, name="probe", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.seen = []

    def reset_state(self):
        super().reset_state()

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.seen.append((np.array(y_pred), None if sample_weight is None else
                          np.array(sample_weight)))
        self.count += 1.0


class L2:
    def __init__(self, l2):
        self.l2 = l2

    def __call__(self, value):
        return float(self.l2 * np.sum(np.asarray(value, np.float64) ** 2))

    def add_gradient(self, value, grad):
        grad += np.float32(2.0 * self.l2) * value


class NonNeg:
    def __call__(self, value):
        return np.maximum(value, 0.0)


class TwoHeads(Model):
    """``x -> trunk (Dense relu) -> [out_a (Dense), out_b (Dense)]``."""

    def __init__(self, n_in=6, hidden=8, units_a=3, act_a="softmax", units_b=2, act_b=None,
                 name=None):
        super().__init__(name=name)
        self.trunk = Dense(hidden, activation="relu", name="trunk")
        self.head_a = Dense(units_a, activation=act_a, name="out_a")
        self.head_b = Dense(units_b, activation=act_b, name="out_b")
        self.n_in, self.hidden = n_in, hidden
        self._built = False
        self._ensure_built((None, n_in))

    @property
    def layers(self):
        return [self.trunk, self.head_a, self.head_b]

    @property
    def built(self):
        return self._built

    def _ensure_built(self, input_shape):
        if self._built:
            return
        self.trunk._maybe_build((None, self.n_in))
        self.head_a._maybe_build((None, self.hidden))
        self.head_b._maybe_build((None, self.hidden))
        self._built = True

    @property
    def input_shape(self):
        return (None, self.n_in)

    @property
    def output_shape(self):
        return [(None, self.head_a.units), (None, self.head_b.units)]

    @property
    def input_names(self):
        return ["features"]

    @property
    def output_names(self):
        return ["out_a", "out_b"]

    def _output_layers(self):
        return [self.head_a, self.head_b]

    def _forward_train(self, inputs, training, logits_layers=()):
        if len(inputs) != 1:
            raise ValueError(f"expects 1 input, got {len(inputs)}")
        h = self.trunk.forward_train(inputs[0], training)
        fold = lambda layer: any(layer is l for l in logits_layers)  # noqa: E731
        a = self.head_a.forward_train(h, training, logits=fold(self.head_a))
        b = self.head_b.forward_train(h, training, logits=fold(self.head_b))
        self._fold = (fold(self.head_a), fold(self.head_b))
        return [a, b]

    def _backward(self, grads, logits_layers=()):
        ga = self.head_a.backward(grads[0], True, logits=self._fold[0])
        ga = np.array(ga, copy=True)
        gb = self.head_b.backward(grads[1], True, logits=self._fold[1])
        self.trunk.backward(np.ascontiguousarray(ga + gb), need_input_grad=False)


def set_same_weights(mine, tk_model):
    """Copy ``mine``'s weights into the tf_keras twin (same layer names and order)."""
    for layer in mine.layers:
        tk_model.get_layer(layer.name).set_weights(layer.get_weights())


def seeded(seed=0):
    keras.utils.set_random_seed(seed)


class TwoInputs(Model):
    """``[a (4 features), b (3 features)] -> Dense(5)(a) + Dense(5)(b) -> Dense(3) 'out'``."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.da = Dense(5, name="da")
        self.db = Dense(5, name="db")
        self.head = Dense(3, activation="softmax", name="out")
        self.da._maybe_build((None, 4))
        self.db._maybe_build((None, 3))
        self.head._maybe_build((None, 5))

    layers = property(lambda self: [self.da, self.db, self.head])
    built = property(lambda self: True)
    input_shape = property(lambda self: [(None, 4), (None, 3)])
    output_shape = property(lambda self: (None, 3))
    input_names = property(lambda self: ["a", "b"])
    output_names = property(lambda self: ["out"])

    def _ensure_built(self, input_shape):
        pass

    def _output_layers(self):
        return [self.head]

    def _forward_train(self, inputs, training, logits_layers=()):
        if len(inputs) != 2:
            raise ValueError(f"expects 2 inputs, got {len(inputs)}")
        h = self.da.forward_train(inputs[0], training) + self.db.forward_train(inputs[1], training)
        self._fold = any(self.head is l for l in logits_layers)
        return [self.head.forward_train(np.ascontiguousarray(h), training, logits=self._fold)]

    def _backward(self, grads, logits_layers=()):
        g = np.array(self.head.backward(grads[0], True, logits=self._fold), copy=True)
        self.da.backward(g, need_input_grad=False)
        self.db.backward(g, need_input_grad=False)


class ActivityL2Dense(Dense):
    """A Dense with an L2 activity regularizer (Dense reports the penalty of its output divided
    by the batch rows in ``forward_train`` and adds its gradient in ``backward``)."""

    def __init__(self, units, l2=0.01, **kwargs):
        super().__init__(units, **kwargs)
        self.activity_regularizer = L2(l2)
