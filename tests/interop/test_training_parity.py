"""Several epochs of ``fit`` match tf_keras 2.21 from the same initial weights and batches.

test_torch_parity checks one step against PyTorch; this trains 3 epochs (``shuffle=False``, a short
last batch each epoch) in both libraries and compares every weight, the optimizer state and the
per-epoch logs.

* Without dropout (no layer, or ``Dropout(0.0)``) training is deterministic in both, so the results
  must agree to float32 round-off: weights within rtol 1e-4 / atol 1e-5, per-epoch loss and accuracy
  within rtol 1e-4 (different BLAS summation orders, hence not bit-exact).
* With ``Dropout(0.3)`` the masks come from different generators, so the runs cannot agree step for
  step. They are compared statistically instead: the per-epoch training loss within 5 % relative
  (500-row epochs), the loss of the trained models without dropout within 5 %, and each weight
  matrix moved from the common start by the same amount (norm ratio within 0.8-1.25), while the
  same model without dropout ends measurably elsewhere (so dropout was really on in both).
  Inference (``training=False``) of the same weights agrees to float32 round-off.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


from fastckpt import keras

EPOCHS = 3
N, D, H, K = 500, 64, 96, 10  # 500 rows in batches of 32: 15 full batches and one of 20
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, D)).astype(np.float32)
    w = rng.standard_normal((D, K))
    y = (x @ w + 0.5 * rng.standard_normal((N, K))).argmax(1).astype(np.int64)  # learnable, noisy
    return x, y


def optimizer(lib, name):
    if name == "adam":
        return lib.optimizers.Adam(learning_rate=1e-3)
    if name == "sgd":
        return lib.optimizers.SGD(learning_rate=0.05)
    if name == "sgd_nesterov":
        return lib.optimizers.SGD(learning_rate=0.02, momentum=0.9, nesterov=True)
    raise ValueError(name)


def build(lib, dropout, head):
    """Dense(H, relu) [Dropout] Dense(K): logits and a from_logits loss, or a softmax output
    and a probability loss (which both libraries fold into the loss)."""
    first = (lib.layers.Dense(H, activation="relu", input_shape=(D,)) if lib is keras
             else lib.layers.Dense(H, activation="relu"))
    layers = [first] if lib is keras else [lib.Input((D,)), first]
    if dropout is not None:
        layers.append(lib.layers.Dropout(dropout))
    layers.append(lib.layers.Dense(K, activation="softmax" if head == "softmax" else None))
    return lib.Sequential(layers)


def compile_pair(tfk, opt, dropout, head):
    ours = build(keras, dropout, head)
    theirs = build(tfk, dropout, head)
    theirs.set_weights(ours.get_weights())
    for lib, model in ((keras, ours), (tfk, theirs)):
        model.compile(optimizer=optimizer(lib, opt),
                      loss=lib.losses.SparseCategoricalCrossentropy(from_logits=head == "logits"),
                      metrics=["accuracy"])
    return ours, theirs


def fit(model, x, y):
    return model.fit(x, y, batch_size=32, epochs=EPOCHS, shuffle=False, verbose=0).history


def slots(model):
    """Optimizer slots after the iteration counter, in the order both libraries keep them."""
    return [np.asarray(v.numpy()) for v in model.optimizer.variables[1:]]


@pytest.mark.parametrize("head", ["logits", "softmax"])
@pytest.mark.parametrize("dropout", [None, 0.0])
@pytest.mark.parametrize("opt", ["adam", "sgd", "sgd_nesterov"])
def test_three_epochs_match_tf_keras_without_dropout(tfk, data, opt, dropout, head):
    x, y = data
    tfk.utils.set_random_seed(0)
    ours, theirs = compile_pair(tfk, opt, dropout, head)
    w0 = ours.get_weights()
    h_ours, h_theirs = fit(ours, x, y), fit(theirs, x, y)

    assert int(ours.optimizer.iterations.numpy()) == int(theirs.optimizer.iterations.numpy()) == EPOCHS * 16
    w_ours, w_theirs = ours.get_weights(), theirs.get_weights()
    assert len(w_ours) == len(w_theirs) == 4
    for i, (a, b) in enumerate(zip(w_ours, w_theirs)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"weight {i} after {EPOCHS} epochs")
        assert np.abs(a - w0[i]).max() > 100 * ATOL  # it moved: the comparison is not vacuous

    s_ours, s_theirs = slots(ours), slots(theirs)
    if opt == "sgd":
        # Both keep an m slot per variable (tf_keras' layout); with momentum 0 tf_keras stores the
        # last step's update there, which it never reads back, and ours stays zero.
        assert len(s_ours) == len(s_theirs) == 4 and not any(a.any() for a in s_ours)
        s_ours = s_theirs = []
    assert len(s_ours) == len(s_theirs) == {"adam": 8, "sgd": 0, "sgd_nesterov": 4}[opt]
    for i, (a, b) in enumerate(zip(s_ours, s_theirs)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"optimizer slot {i}")

    assert set(h_ours) == set(h_theirs) == {"loss", "accuracy"}
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(h_ours[key], h_theirs[key], rtol=RTOL, err_msg=key)
    assert h_ours["loss"][-1] < h_ours["loss"][0]  # it learned
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours.evaluate(x, y, verbose=0), theirs.evaluate(x, y, verbose=0), rtol=RTOL)


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_three_epochs_with_dropout_agree_with_tf_keras_statistically(tfk, data, opt):
    x, y = data
    tfk.utils.set_random_seed(0)
    ours, theirs = compile_pair(tfk, opt, 0.3, "logits")
    w0 = ours.get_weights()
    plain, _ = compile_pair(tfk, opt, None, "logits")
    plain.set_weights(w0)

    # Inference ignores dropout: the same weights give the same outputs before any training.
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False).numpy(), rtol=RTOL, atol=ATOL)

    h_ours, h_theirs, _ = fit(ours, x, y), fit(theirs, x, y), fit(plain, x, y)
    np.testing.assert_allclose(h_ours["loss"], h_theirs["loss"], rtol=0.05)
    eval_ours = ours.evaluate(x, y, verbose=0)[0]
    eval_theirs = theirs.evaluate(x, y, verbose=0)[0]
    assert eval_ours == pytest.approx(eval_theirs, rel=0.05)

    w_ours, w_theirs, w_plain = ours.get_weights(), theirs.get_weights(), plain.get_weights()
    assert len(w_ours) == len(w_theirs) == len(w_plain) == len(w0) == 4
    for i in (0, 2):  # the kernels
        moved_ours = np.linalg.norm(w_ours[i] - w0[i])
        moved_theirs = np.linalg.norm(w_theirs[i] - w0[i])
        assert 0.8 < moved_ours / moved_theirs < 1.25, (i, moved_ours, moved_theirs)
        # Dropout changed where training went, in ours as in theirs, by a comparable amount.
        off_ours = np.linalg.norm(w_ours[i] - w_plain[i])
        off_theirs = np.linalg.norm(w_theirs[i] - w_plain[i])
        assert off_ours > 0.05 * moved_ours and off_theirs > 0.05 * moved_theirs, (i, off_ours, off_theirs)
        assert 0.5 < off_ours / off_theirs < 2.0, (i, off_ours, off_theirs)
