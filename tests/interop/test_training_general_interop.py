"""The general training loop against tf_keras 2.21: the same initial weights and unshuffled
batches give the same History keys, per-epoch losses and metrics, and weights (within 1e-4) for a
two-output model with loss weights, per-output sample weights, a weighted metric, an L2 penalty
and a constraint, and for a single-output model trained with class weights."""

import numpy as np
import pytest

from fastckpt import keras

from interop.conftest import require
from training_helpers import L2, MAE, MSE, ActivityL2Dense, NonNeg, TwoHeads, seeded

TOL = 1e-4


def _compare(mine_hist, tk_hist, mine_weights, tk_weights):
    assert list(mine_hist) == list(tk_hist)
    for key in tk_hist:
        np.testing.assert_allclose(mine_hist[key], tk_hist[key], rtol=TOL, atol=TOL, err_msg=key)
    assert len(mine_weights) == len(tk_weights)
    for a, b in zip(mine_weights, tk_weights):
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL)


def test_two_outputs_with_loss_weights_sample_weights_penalty_and_constraint():
    require("tensorflow")
    tk = require("tf_keras")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((48, 6)).astype(np.float32)
    ya = rng.integers(0, 3, 48)
    yb = rng.standard_normal((48, 2)).astype(np.float32)
    w = rng.random(48).astype(np.float32)
    xv, yav, ybv = x[:20] * 0.5, ya[:20], yb[:20] + 0.1
    wv = rng.random(20).astype(np.float32)

    seeded(1)
    mine = TwoHeads()
    mine.trunk.kernel.regularizer = L2(0.01)
    mine.head_b.kernel.constraint = NonNeg()
    mine.compile(optimizer=keras.optimizers.SGD(0.1),
                 loss={"out_a": "sparse_categorical_crossentropy", "out_b": MSE()},
                 loss_weights={"out_a": 0.7, "out_b": 1.5}, metrics={"out_a": "accuracy"},
                 weighted_metrics={"out_b": [MAE()]})

    inp = tk.Input((6,), name="features")
    h = tk.layers.Dense(8, activation="relu", name="trunk",
                        kernel_regularizer=tk.regularizers.l2(0.01))(inp)
    a = tk.layers.Dense(3, activation="softmax", name="out_a")(h)
    b = tk.layers.Dense(2, name="out_b", kernel_constraint=tk.constraints.NonNeg())(h)
    ref = tk.Model(inp, [a, b])
    ref.compile(optimizer=tk.optimizers.SGD(0.1),
                loss={"out_a": "sparse_categorical_crossentropy", "out_b": "mse"},
                loss_weights={"out_a": 0.7, "out_b": 1.5}, metrics={"out_a": "accuracy"},
                weighted_metrics={"out_b": ["mae"]})
    for layer in mine.layers:
        ref.get_layer(layer.name).set_weights(layer.get_weights())

    kw = dict(batch_size=16, epochs=3, shuffle=False, verbose=0)
    h_mine = mine.fit(x, {"out_a": ya, "out_b": yb}, sample_weight={"out_b": w},
                      validation_data=(xv, [yav, ybv], [None, wv]), **kw)
    h_ref = ref.fit(x, {"out_a": ya, "out_b": yb}, sample_weight={"out_b": w},
                    validation_data=(xv, [yav, ybv], [None, wv]), **kw)
    assert list(h_mine.history) == ["loss", "out_a_loss", "out_b_loss", "out_a_accuracy",
                                    "out_b_mae", "val_loss", "val_out_a_loss", "val_out_b_loss",
                                    "val_out_a_accuracy", "val_out_b_mae"]
    _compare(h_mine.history, h_ref.history, mine.get_weights(), ref.get_weights())
    assert mine.metrics_names == ref.metrics_names
    np.testing.assert_allclose(mine.losses, [float(v) for v in ref.losses], rtol=1e-5)
    got = mine.evaluate(xv, [yav, ybv], sample_weight=[None, wv], verbose=0)
    want = ref.evaluate(xv, [yav, ybv], sample_weight={"out_b": wv}, verbose=0)
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
    for p, q in zip(mine.predict(xv, verbose=0), ref.predict(xv, verbose=0)):
        np.testing.assert_allclose(p, q, rtol=TOL, atol=TOL)
    # train_on_batch / test_on_batch return the same values in the same order.
    np.testing.assert_allclose(mine.train_on_batch(x[:16], [ya[:16], yb[:16]]),
                               ref.train_on_batch(x[:16], [ya[:16], yb[:16]]), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(mine.test_on_batch(xv, [yav, ybv]), ref.test_on_batch(xv, [yav, ybv]),
                               rtol=TOL, atol=TOL)


@pytest.mark.parametrize("validation_split", [0.0, 0.25])
def test_class_weight_matches_tf_keras(validation_split):
    require("tensorflow")
    tk = require("tf_keras")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 40)]
    table = {0: 0.5, 1: 2.0, 2: 1.25}

    seeded(2)
    mine = keras.Sequential([keras.layers.Dense(8, activation="relu", input_shape=(5,)),
                             keras.layers.Dense(3)])
    mine.compile(optimizer=keras.optimizers.SGD(0.05), loss=MSE())
    ref = tk.Sequential([tk.layers.Dense(8, activation="relu", input_shape=(5,)),
                         tk.layers.Dense(3)])
    ref.compile(optimizer=tk.optimizers.SGD(0.05), loss="mse")
    ref.set_weights(mine.get_weights())
    kw = dict(batch_size=8, epochs=3, shuffle=False, verbose=0, class_weight=table,
              validation_split=validation_split)
    _compare(mine.fit(x, y, **kw).history, ref.fit(x, y, **kw).history, mine.get_weights(),
             ref.get_weights())


def test_activity_regularizer_matches_tf_keras():
    require("tensorflow")
    tk = require("tf_keras")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((30, 5)).astype(np.float32)
    y = rng.standard_normal((30, 2)).astype(np.float32)
    seeded(3)
    mine = keras.Sequential([ActivityL2Dense(8, l2=0.05, activation="relu", input_shape=(5,)),
                             keras.layers.Dense(2)])
    mine.compile(optimizer=keras.optimizers.SGD(0.05), loss=MSE())
    ref = tk.Sequential([tk.layers.Dense(8, activation="relu", input_shape=(5,),
                                         activity_regularizer=tk.regularizers.l2(0.05)),
                         tk.layers.Dense(2)])
    ref.compile(optimizer=tk.optimizers.SGD(0.05), loss="mse")
    ref.set_weights(mine.get_weights())
    kw = dict(batch_size=8, epochs=3, shuffle=False, verbose=0, validation_data=(x[:10], y[:10]))
    _compare(mine.fit(x, y, **kw).history, ref.fit(x, y, **kw).history, mine.get_weights(),
             ref.get_weights())
