"""Every metric against tf_keras 2.21 on the same random inputs: three ``update_state`` calls with
sample weights, then ``result()`` (1e-5; AUC and the *At* metrics 1e-4), and the same
``get_config``. Also the History keys tf_keras gives ``metrics=['accuracy']`` etc. per loss.

Skipped locally without tf_keras; CI sets FASTCKPT_REQUIRE_INTEROP=1 so a missing peer fails.
"""

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from interop.conftest import require

from fastckpt import keras, losses
from fastckpt import metrics as M

N = 40


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def draw(kind, rng):
    """(y_true, y_pred) of one batch for a data ``kind``."""
    if kind == "binary":
        return (rng.integers(0, 2, (N, 1)).astype(np.float32),
                rng.random((N, 1), dtype=np.float32))
    if kind == "quantized":  # predictions on the threshold grid, exact 0 and 1 included
        return (rng.integers(0, 2, (N, 2)).astype(np.float32),
                (rng.integers(0, 11, (N, 2)) / 10).astype(np.float32))
    if kind == "binary_logits":
        return (rng.integers(0, 2, (N, 1)).astype(np.float32),
                rng.normal(0, 2, (N, 1)).astype(np.float32))
    if kind == "multilabel":
        return (rng.integers(0, 2, (N, 4)).astype(np.float32),
                rng.random((N, 4), dtype=np.float32))
    if kind == "multilabel_logits":
        return (rng.integers(0, 2, (N, 4)).astype(np.float32),
                rng.normal(0, 2, (N, 4)).astype(np.float32))
    if kind in ("categorical", "categorical_logits"):
        z = rng.normal(0, 2, (N, 6)).astype(np.float32)
        y = np.eye(6, dtype=np.float32)[rng.integers(0, 6, N)]
        return y, (z if kind.endswith("logits") else _softmax(z).astype(np.float32))
    if kind in ("sparse", "sparse_logits", "sparse_col"):
        z = rng.normal(0, 2, (N, 6)).astype(np.float32)
        y = rng.integers(0, 6, N)
        if kind == "sparse_col":
            y = y[:, None]
        return y, (z if kind.endswith("logits") else _softmax(z).astype(np.float32))
    if kind == "regression":
        return (rng.normal(0, 1, (N, 3)).astype(np.float32),
                rng.normal(0, 1, (N, 3)).astype(np.float32))
    if kind == "positive":
        return (rng.random((N, 3), dtype=np.float32) + 0.1,
                rng.random((N, 3), dtype=np.float32) + 0.1)
    if kind == "ints":
        return rng.integers(0, 3, (N, 2)), rng.integers(0, 3, (N, 2))
    raise AssertionError(kind)


# (class name, constructor kwargs, data kind, tolerance)
CASES = [
    ("Accuracy", {}, "ints", 1e-5),
    ("BinaryAccuracy", {}, "binary", 1e-5),
    ("BinaryAccuracy", {"threshold": 0.3}, "multilabel", 1e-5),
    ("CategoricalAccuracy", {}, "categorical", 1e-5),
    ("SparseCategoricalAccuracy", {}, "sparse", 1e-5),
    ("SparseCategoricalAccuracy", {}, "sparse_col", 1e-5),
    ("TopKCategoricalAccuracy", {"k": 2}, "categorical", 1e-5),
    ("SparseTopKCategoricalAccuracy", {}, "sparse", 1e-5),
    ("SparseTopKCategoricalAccuracy", {"k": 3}, "sparse_col", 1e-5),
    ("AUC", {}, "binary", 1e-4),
    ("AUC", {"num_thresholds": 50, "curve": "PR"}, "binary", 1e-4),
    ("AUC", {"curve": "PR", "summation_method": "minoring"}, "binary", 1e-4),
    ("AUC", {"curve": "PR", "summation_method": "majoring"}, "multilabel", 1e-4),
    ("AUC", {"summation_method": "minoring"}, "multilabel", 1e-4),
    ("AUC", {"multi_label": True}, "multilabel", 1e-4),
    ("AUC", {"multi_label": True, "num_labels": 4, "curve": "PR"}, "multilabel", 1e-4),
    ("AUC", {"multi_label": True, "label_weights": [0.5, 1.0, 0.0, 2.0]}, "multilabel", 1e-4),
    ("AUC", {"label_weights": [0.5, 1.0, 0.2, 2.0]}, "multilabel", 1e-4),
    ("AUC", {"from_logits": True}, "binary_logits", 1e-4),
    ("AUC", {}, "quantized", 1e-4),
    ("AUC", {"num_thresholds": 11, "curve": "PR"}, "quantized", 1e-4),
    ("AUC", {"thresholds": [0.3, 0.5]}, "quantized", 1e-4),
    ("Precision", {"thresholds": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]},
     "quantized", 1e-5),
    ("Recall", {"thresholds": [0.0, 0.3, 1.0]}, "quantized", 1e-5),
    ("RecallAtPrecision", {"precision": 0.5, "num_thresholds": 11}, "quantized", 1e-4),
    ("AUC", {"thresholds": [0.1, 0.35, 0.5, 0.8]}, "binary", 1e-4),
    ("AUC", {"thresholds": [0.25, 0.5, 0.75], "curve": "PR"}, "multilabel", 1e-4),
    ("Precision", {}, "binary", 1e-5),
    ("Precision", {"thresholds": [0.2, 0.5, 0.9]}, "multilabel", 1e-5),
    ("Precision", {"top_k": 2}, "multilabel", 1e-5),
    ("Precision", {"class_id": 2}, "multilabel", 1e-5),
    ("Precision", {"thresholds": [0.0, 0.5, 1.0]}, "multilabel", 1e-5),
    ("Recall", {}, "binary", 1e-5),
    ("Recall", {"thresholds": [0.3, 0.6]}, "multilabel", 1e-5),
    ("Recall", {"top_k": 1, "class_id": 1}, "categorical", 1e-5),
    ("TruePositives", {}, "binary", 1e-5),
    ("FalsePositives", {"thresholds": [0.15, 0.5, 0.85]}, "multilabel", 1e-5),
    ("TrueNegatives", {}, "multilabel", 1e-5),
    ("FalseNegatives", {"thresholds": [0.5, 0.7]}, "binary", 1e-5),
    ("PrecisionAtRecall", {"recall": 0.6}, "binary", 1e-4),
    ("PrecisionAtRecall", {"recall": 0.8, "num_thresholds": 20, "class_id": 1}, "multilabel", 1e-4),
    ("RecallAtPrecision", {"precision": 0.5}, "binary", 1e-4),
    ("RecallAtPrecision", {"precision": 0.7, "num_thresholds": 1}, "multilabel", 1e-4),
    ("SensitivityAtSpecificity", {"specificity": 0.5}, "binary", 1e-4),
    ("SpecificityAtSensitivity", {"sensitivity": 0.5}, "multilabel", 1e-4),
    ("MeanSquaredError", {}, "regression", 1e-5),
    ("RootMeanSquaredError", {}, "regression", 1e-5),
    ("MeanAbsoluteError", {}, "regression", 1e-5),
    ("MeanAbsolutePercentageError", {}, "regression", 1e-4),
    ("MeanSquaredLogarithmicError", {}, "positive", 1e-5),
    ("LogCoshError", {}, "regression", 1e-5),
    ("CosineSimilarity", {}, "regression", 1e-5),
    ("KLDivergence", {}, "categorical", 1e-5),
    ("Poisson", {}, "positive", 1e-5),
    ("Hinge", {}, "multilabel_logits", 1e-5),
    ("SquaredHinge", {}, "multilabel_logits", 1e-5),
    ("CategoricalHinge", {}, "categorical_logits", 1e-5),
    ("R2Score", {}, "regression", 1e-5),
    ("R2Score", {"class_aggregation": "variance_weighted_average"}, "regression", 1e-5),
    ("R2Score", {"class_aggregation": None}, "regression", 1e-5),
    ("R2Score", {"num_regressors": 2}, "regression", 1e-5),
    ("BinaryCrossentropy", {}, "multilabel", 1e-5),
    ("BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, "multilabel_logits", 1e-5),
    ("CategoricalCrossentropy", {}, "categorical", 1e-5),
    ("CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.2},
     "categorical_logits", 1e-5),
    ("SparseCategoricalCrossentropy", {}, "sparse", 1e-5),
    ("SparseCategoricalCrossentropy", {"from_logits": True}, "sparse_logits", 1e-5),
    ("SparseCategoricalCrossentropy", {"from_logits": True, "ignore_class": 2}, "sparse_logits",
     1e-5),
]


def _run(metric, batches, weighted):
    for i, (yt, yp, sw) in enumerate(batches):
        if weighted:
            metric.update_state(yt, yp, sample_weight=sw)
        else:
            metric.update_state(yt, yp)
    return np.asarray(metric.result(), np.float64)


def _batches(kind, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        yt, yp = draw(kind, rng)
        sw = rng.random(N).astype(np.float32) * 2.0
        sw[rng.random(N) < 0.2] = 0.0
        out.append((yt, yp, sw))
    return out


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("cls,kwargs,kind,tol", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_metric_matches_tf_keras(cls, kwargs, kind, tol, weighted):
    tfk = require("tf_keras")
    batches = _batches(kind, seed=len(cls) * 31 + len(kwargs))
    theirs = getattr(tfk.metrics, cls)(**kwargs)
    ours = getattr(M, cls)(**kwargs)
    want = _run(theirs, batches, weighted)
    got = _run(ours, batches, weighted)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # the same config, key for key
    # (tf_keras numbers a default name per session: auc, auc_1, ...; ours stays 'auc')
    tc = {k: _plain(v) for k, v in theirs.get_config().items()}
    tc["name"] = re.sub(r"_[0-9]+$", "", tc["name"])
    oc = {k: _plain(v) for k, v in ours.get_config().items()}
    assert oc.keys() == tc.keys()
    for key in tc:
        assert oc[key] == pytest.approx(tc[key]) if isinstance(tc[key], (float, list)) \
            else oc[key] == tc[key], key
    # reset, then one batch again equals a fresh run
    ours.reset_state()
    theirs.reset_state()
    np.testing.assert_allclose(_run(ours, batches[:1], weighted), _run(theirs, batches[:1], weighted),
                               rtol=tol, atol=tol)


def test_mean_sum_and_wrapper_match_tf_keras(rng):
    tfk = require("tf_keras")
    for cls in ("Mean", "Sum"):
        ours, theirs = getattr(M, cls)(), getattr(tfk.metrics, cls)()
        for shape, wshape in [((5,), (5,)), ((5, 3), (5,)), ((5, 3), (5, 1)), ((4, 2), None),
                              ((6,), ())]:
            v = rng.normal(size=shape).astype(np.float32)
            w = None if wshape is None else rng.random(wshape).astype(np.float32)
            ours.update_state(v, sample_weight=w)
            theirs.update_state(v, sample_weight=w)
        np.testing.assert_allclose(float(ours.result()), float(theirs.result()), rtol=1e-5)
    ours = M.MeanMetricWrapper(M.get("mse")._fn, name="m2")
    theirs = tfk.metrics.MeanMetricWrapper(tfk.metrics.mse, name="m2")
    for _ in range(3):
        yt, yp = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
        w = rng.random(7)
        ours.update_state(yt, yp, sample_weight=w)
        theirs.update_state(yt, yp, sample_weight=w)
    np.testing.assert_allclose(float(ours.result()), float(theirs.result()), rtol=1e-5)


# -- compile-level names: 'accuracy', 'crossentropy', functions and losses as metrics --------------

LOSS_CASES = [
    ("binary_crossentropy", 1, "binary", losses.Loss),
    ("categorical_crossentropy", 6, "categorical", None),
    ("sparse_categorical_crossentropy", 6, "sparse", None),
]


def _tf_history(tfk, loss, units, kind, metrics, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    yt, _ = draw(kind if kind != "binary" else "binary", rng)
    yt = yt[:32]
    model = tfk.Sequential([tfk.Input((5,)), tfk.layers.Dense(units, activation=(
        "sigmoid" if units == 1 else "softmax"))])
    model.compile("sgd", loss=loss, metrics=metrics)
    hist = model.fit(x, yt, epochs=1, batch_size=16, verbose=0)
    return model, x, yt, hist


@pytest.mark.parametrize("loss,units,kind", [c[:3] for c in LOSS_CASES])
def test_accuracy_names_and_values_follow_the_loss_as_in_tf_keras(loss, units, kind):
    tfk = require("tf_keras")
    names = ["accuracy", "acc", "crossentropy", "ce"]
    model, x, yt, hist = _tf_history(tfk, loss, units, kind, names)
    ours = [M.get(n, loss=losses_get(loss), output_shape=(None, units)) for n in names]
    assert set(hist.history) == {"loss"} | {m.name for m in ours}
    # same values on the model's predictions as tf_keras' evaluate
    pred = model.predict(x, verbose=0)
    theirs = model.evaluate(x, yt, verbose=0, return_dict=True, batch_size=len(x))
    for m in ours:
        m.update_state(yt, pred)
        assert float(m.result()) == pytest.approx(theirs[m.name], abs=2e-5), m.name
    # and without telling the loss or shape: decided from the batch shapes
    for n in names:
        m = M.get(n)
        m.update_state(yt, pred)
        assert float(m.result()) == pytest.approx(theirs[n], abs=2e-5), n


def losses_get(name):
    try:
        return losses.get(name)
    except ValueError:  # a loss not on this branch yet: its name tells the kind
        return name


def first_score(y_true, y_pred):
    """A user's metric function, the same code for tf_keras and for us."""
    return y_pred[..., 0] * 2.0


def test_functions_and_loss_objects_as_metrics_match_tf_keras():
    """tf_keras passes no sample weights to ``metrics=`` (only to ``weighted_metrics=``); a Loss
    object as a metric averages its batch means (each counted once, or by the batch's weight sum)."""
    tfk = require("tf_keras")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 5)).astype(np.float32)
    y = rng.integers(0, 6, 32)
    model = tfk.Sequential([tfk.Input((5,)), tfk.layers.Dense(6, activation="softmax")])

    def theirs_list():
        return [tfk.losses.SparseCategoricalCrossentropy(), "mse", "mae",
                tfk.metrics.sparse_top_k_categorical_accuracy, first_score]

    def ours_list():
        return [M.get(losses.SparseCategoricalCrossentropy()), M.get("mse"), M.get("mae"),
                M.get(M.sparse_top_k_categorical_accuracy), M.get(first_score)]

    model.compile("sgd", loss="sparse_categorical_crossentropy", metrics=theirs_list(),
                  weighted_metrics=theirs_list())
    sw = rng.random(32).astype(np.float32)
    theirs = model.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True, batch_size=12)
    pred = model.predict(x, verbose=0)
    plain, weighted = ours_list(), ours_list()
    y2 = y[:, None]  # tf_keras' data adapter makes 1-D targets (n, 1) before the metrics see them
    for lo in range(0, 32, 12):
        for m in plain:
            m.update_state(y2[lo:lo + 12], pred[lo:lo + 12])
        for m in weighted:
            m.update_state(y2[lo:lo + 12], pred[lo:lo + 12], sample_weight=sw[lo:lo + 12])
    assert [m.name for m in plain] + ["weighted_" + m.name for m in weighted] == \
        [k for k in theirs if k != "loss"]
    for m in plain:
        assert float(m.result()) == pytest.approx(theirs[m.name], rel=1e-5, abs=1e-5), m.name
    for m in weighted:
        assert float(m.result()) == pytest.approx(theirs["weighted_" + m.name], rel=1e-5,
                                                  abs=1e-5), m.name


def test_serialize_matches_tf_keras_records():
    tfk = require("tf_keras")
    for cls, kwargs in [("AUC", {"curve": "PR"}), ("Precision", {"top_k": 2}),
                        ("BinaryAccuracy", {"threshold": 0.4}), ("R2Score", {}),
                        ("SparseCategoricalCrossentropy", {"from_logits": True}), ("Mean", {})]:
        kwargs["name"] = f"my_{cls.lower()}"  # (tf_keras numbers default names per session)
        theirs = tfk.metrics.serialize(getattr(tfk.metrics, cls)(**kwargs))
        ours = M.serialize(getattr(M, cls)(**kwargs))
        assert ours == theirs
        # each side reads the other's record
        back = M.deserialize(theirs)
        assert type(back) is getattr(M, cls) and back.get_config() == ours["config"]
        assert tfk.metrics.deserialize(ours).get_config() == theirs["config"]
    theirs = tfk.metrics.serialize(tfk.metrics.MeanMetricWrapper(tfk.metrics.mean_squared_error,
                                                                 name="w"))
    back = M.deserialize(theirs)
    assert back.name == "w"
    assert float(back([1.0, 2.0], [2.0, 2.0])) == pytest.approx(0.5)


def test_tf_keras_loads_our_h5_with_these_metrics_and_evaluates_the_same(tmp_path):
    tfk = require("tf_keras")
    rng = np.random.default_rng(9)
    x = rng.random((64, 8), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    model = keras.Sequential([keras.layers.Dense(3, activation="softmax", input_shape=(8,))])
    model.compile("adam", "sparse_categorical_crossentropy",
                  metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2),
                           keras.metrics.SparseCategoricalCrossentropy(), "crossentropy"])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    ours = model.evaluate(x, y, verbose=0, return_dict=True, batch_size=64)
    model.save(str(tmp_path / "m.h5"))
    back = keras.models.load_model(str(tmp_path / "m.h5"))
    assert back.evaluate(x, y, verbose=0, return_dict=True, batch_size=64) == ours
    theirs = tfk.models.load_model(str(tmp_path / "m.h5"))
    got = theirs.evaluate(x, y, verbose=0, return_dict=True, batch_size=64)
    assert set(got) == set(ours)
    for k in ours:
        assert got[k] == pytest.approx(ours[k], rel=1e-5, abs=1e-6), k
