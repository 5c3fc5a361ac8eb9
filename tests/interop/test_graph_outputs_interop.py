"""The native graph trainer's losses, metrics and outputs against tf_keras 2.21: a two-output
Functional model with loss weights, per-output metrics and sample weights, and a model trained
with ``class_weight`` (tf_keras takes class weights for single-output models only), trained from
the same initial weights with SGD: History and weights agree."""

import os

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.training import graph_fused


def _two_outputs(lib):
    L = lib.layers
    inp = lib.Input(shape=(6,), name="features")
    h = L.Dense(8, activation="relu", name="hidden")(inp)
    cls = L.Dense(3, activation="softmax", name="cls")(h)
    flag = L.Dense(1, activation="sigmoid", name="flag")(L.Concatenate()([h, inp]))
    return lib.Model(inp, [cls, flag])


def _one_output(lib):
    L = lib.layers
    inp = lib.Input(shape=(6,))
    h = L.Dense(8, activation="tanh")(inp)
    return lib.Model(inp, L.Dense(1, activation="sigmoid")(h))


def _compile(lib, model, case):
    m = lib.metrics
    if case == "two_outputs":
        model.compile(optimizer=lib.optimizers.SGD(0.1), loss={
            "cls": "sparse_categorical_crossentropy", "flag": "binary_crossentropy"},
            loss_weights={"cls": 0.7, "flag": 2.0},
            metrics={"cls": ["accuracy", m.SparseTopKCategoricalAccuracy(k=2, name="top2")],
                     "flag": [m.BinaryAccuracy(name="acc"), m.MeanSquaredError(name="brier"),
                              m.Precision(name="precision"), m.Recall(name="recall")]},
            weighted_metrics={"flag": [m.BinaryAccuracy(name="wacc")]})
    else:
        model.compile(optimizer=lib.optimizers.SGD(0.1), loss="binary_crossentropy",
                      metrics=[m.BinaryAccuracy(name="acc"), m.TruePositives(name="tp"),
                               m.FalseNegatives(name="fn"), m.Recall(name="recall")])


@pytest.mark.parametrize("case", ["two_outputs", "class_weight"])
def test_graph_outputs_train_as_tf_keras(case, monkeypatch):
    pytest.importorskip("tf_keras")
    import tf_keras

    rng = np.random.default_rng(3)
    n = 160
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y_cls = rng.integers(0, 3, n).astype(np.int32)
    y_flag = ((x[:, 0] - 0.4 * x[:, 2]) > 0.6).astype(np.float32).reshape(-1, 1)
    make = _two_outputs if case == "two_outputs" else _one_output
    tf_keras.utils.set_random_seed(1)
    theirs = make(tf_keras)
    mine = make(keras)
    mine.set_weights(theirs.get_weights())
    if case == "two_outputs":
        fit = dict(x=x, y={"cls": y_cls, "flag": y_flag},
                   sample_weight={"flag": rng.uniform(0.2, 2.0, n).astype(np.float32)})
    else:
        fit = dict(x=x, y=y_flag, class_weight={0: 0.4, 1: 2.5})
    kw = dict(batch_size=16, epochs=2, shuffle=False, verbose=0)
    hists = []
    for lib, model in ((tf_keras, theirs), (keras, mine)):
        _compile(lib, model, case)
        hists.append(model.fit(**fit, **kw).history)
    assert isinstance(mine._trainer._fused, graph_fused.GraphFusedTrainer)
    assert os.environ.get("FASTCKPT_FUSED", "1") != "0"
    h_tf, h_me = hists
    assert set(h_me) == set(h_tf)
    for key in h_tf:
        np.testing.assert_allclose(h_me[key], h_tf[key], rtol=1e-5, atol=1e-5, err_msg=key)
    for a, b in zip(mine.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
