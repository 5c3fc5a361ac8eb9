"""Metrics: NumPy references, streaming, sample weights, reset and state, configs, lookup, errors.

(The numbers against tf_keras itself are in tests/interop/test_metrics_interop.py.)
"""

import numpy as np
import pytest

from fastckpt import losses
from fastckpt import metrics as M

N = 30


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def data(kind, rng, n=N):
    if kind == "binary":
        return rng.integers(0, 2, (n, 1)).astype(np.float32), rng.random((n, 1), dtype=np.float32)
    if kind == "multilabel":
        return rng.integers(0, 2, (n, 3)).astype(np.float32), rng.random((n, 3), dtype=np.float32)
    if kind == "categorical":
        return (np.eye(5, dtype=np.float32)[rng.integers(0, 5, n)],
                _softmax(rng.normal(0, 2, (n, 5))).astype(np.float32))
    if kind == "sparse":
        return rng.integers(0, 5, n), _softmax(rng.normal(0, 2, (n, 5))).astype(np.float32)
    if kind == "regression":
        return rng.normal(size=(n, 2)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)
    if kind == "positive":
        return rng.random((n, 2), dtype=np.float32) + 0.1, rng.random((n, 2), dtype=np.float32) + 0.1
    raise AssertionError(kind)


STREAMING = [
    (lambda: M.Accuracy(), "multilabel"),
    (lambda: M.BinaryAccuracy(threshold=0.4), "multilabel"),
    (lambda: M.CategoricalAccuracy(), "categorical"),
    (lambda: M.SparseCategoricalAccuracy(), "sparse"),
    (lambda: M.TopKCategoricalAccuracy(k=2), "categorical"),
    (lambda: M.SparseTopKCategoricalAccuracy(k=3), "sparse"),
    (lambda: M.AUC(), "binary"),
    (lambda: M.AUC(curve="PR", multi_label=True), "multilabel"),
    (lambda: M.AUC(curve="PR", summation_method="majoring", label_weights=[1, 2, 3]), "multilabel"),
    (lambda: M.Precision(thresholds=[0.3, 0.6]), "multilabel"),
    (lambda: M.Recall(top_k=2), "multilabel"),
    (lambda: M.Recall(class_id=1), "multilabel"),
    (lambda: M.TruePositives(), "binary"),
    (lambda: M.FalsePositives(), "binary"),
    (lambda: M.TrueNegatives(thresholds=[0.2, 0.9]), "binary"),
    (lambda: M.FalseNegatives(), "binary"),
    (lambda: M.PrecisionAtRecall(0.5), "binary"),
    (lambda: M.RecallAtPrecision(0.6, num_thresholds=30), "multilabel"),
    (lambda: M.MeanSquaredError(), "regression"),
    (lambda: M.RootMeanSquaredError(), "regression"),
    (lambda: M.MeanAbsoluteError(), "regression"),
    (lambda: M.MeanAbsolutePercentageError(), "regression"),
    (lambda: M.MeanSquaredLogarithmicError(), "positive"),
    (lambda: M.R2Score(), "regression"),
    (lambda: M.R2Score(class_aggregation=None, num_regressors=1), "regression"),
    (lambda: M.BinaryCrossentropy(label_smoothing=0.1), "multilabel"),
    (lambda: M.CategoricalCrossentropy(), "categorical"),
    (lambda: M.SparseCategoricalCrossentropy(), "sparse"),
    (lambda: M.KLDivergence(), "categorical"),
    (lambda: M.Poisson(), "positive"),
    (lambda: M.CosineSimilarity(), "regression"),
    (lambda: M.get("mse"), "regression"),
]
IDS = [f"{i}-{type(make()).__name__}" for i, (make, _) in enumerate(STREAMING)]


@pytest.mark.parametrize("make,kind", STREAMING, ids=IDS)
def test_streaming_equals_one_batch_and_weights_act_as_counts(make, kind, rng):
    yt, yp = data(kind, rng)
    whole = make()
    whole.update_state(yt, yp)
    streamed = make()
    for lo, hi in [(0, 7), (7, 20), (20, N)]:
        streamed.update_state(yt[lo:hi], yp[lo:hi])
    np.testing.assert_allclose(streamed.result(), whole.result(), rtol=1e-5, atol=1e-6)
    # integer weights are repeated rows, zero weights are dropped rows
    w = rng.integers(0, 3, N)
    w[0] = 2
    weighted = make()
    weighted.update_state(yt, yp, sample_weight=w.astype(np.float32))
    idx = np.repeat(np.arange(N), w)
    repeated = make()
    repeated.update_state(yt[idx], yp[idx])
    if isinstance(whole, M.R2Score) and whole.num_regressors:
        return  # the adjusted score counts entries, weighted or not (as Keras does)
    np.testing.assert_allclose(weighted.result(), repeated.result(), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:More independent predictors")
@pytest.mark.parametrize("make,kind", STREAMING, ids=IDS)
def test_reset_state_and_saved_state(make, kind, rng):
    yt, yp = data(kind, rng)
    m = make()
    fresh = np.asarray(m.result()).copy()
    m.update_state(yt[:10], yp[:10])
    saved, before = m._get_state(), np.asarray(m.result()).copy()
    m.update_state(yt[10:], yp[10:])
    m._set_state(saved)
    np.testing.assert_array_equal(m.result(), before)
    m.reset_state()
    if isinstance(m, M.R2Score):
        assert np.all(m.count == 0) and m.num_samples == 0
    else:
        np.testing.assert_array_equal(m.result(), fresh)
    m.update_state(yt[:10], yp[:10])
    np.testing.assert_array_equal(m.result(), before)


@pytest.mark.parametrize("make,kind", STREAMING, ids=IDS)
def test_config_round_trip(make, kind, rng):
    m = make()
    for back in (type(m).from_config(m.get_config()), M.deserialize(M.serialize(m)),
                 M.get(M.serialize(m))):
        assert type(back) is type(m)
        assert back.get_config() == m.get_config()
        yt, yp = data(kind, rng)
        m.reset_state()
        m.update_state(yt, yp)
        back.update_state(yt, yp)
        np.testing.assert_array_equal(back.result(), m.result())


# -- NumPy references --------------------------------------------------------------------------------

def _loop_counts(yt, yp, thresholds, w):
    """tp/fp/tn/fn per threshold by one comparison each (the slow, obvious way)."""
    pos = yt.reshape(-1) != 0
    p = yp.reshape(-1)
    w = np.broadcast_to(w, yp.shape).reshape(-1)
    out = []
    for t in thresholds:
        above = p > np.float32(t)
        out.append([w[pos & above].sum(), w[~pos & above].sum(), w[~pos & ~above].sum(),
                    w[pos & ~above].sum()])
    return np.array(out).T


@pytest.mark.parametrize("thresholds", [[0.5], [0.9, 0.1, 0.5], [0.0, 0.25, 0.5, 0.75, 1.0]])
def test_confusion_counts_equal_a_loop_over_thresholds(thresholds, rng):
    yt, yp = data("multilabel", rng)
    w = rng.random((N, 1))
    tp, fp, tn, fn = _loop_counts(yt, yp, thresholds, w)
    for cls, want in [(M.TruePositives, tp), (M.FalsePositives, fp), (M.TrueNegatives, tn),
                      (M.FalseNegatives, fn)]:
        m = cls(thresholds=thresholds)
        m.update_state(yt, yp, sample_weight=w[:, 0])
        np.testing.assert_allclose(np.atleast_1d(m.result()), want, rtol=1e-6)
    p = M.Precision(thresholds=thresholds)
    p.update_state(yt, yp, sample_weight=w[:, 0])
    with np.errstate(invalid="ignore"):  # 0/0 is 0, as tf.math.divide_no_nan
        want = np.nan_to_num(tp / (tp + fp))
    np.testing.assert_allclose(np.atleast_1d(p.result()), want, rtol=1e-6)
    r = M.Recall(thresholds=thresholds)
    r.update_state(yt, yp, sample_weight=w[:, 0])
    np.testing.assert_allclose(np.atleast_1d(r.result()), tp / (tp + fn), rtol=1e-6)


def test_roc_auc_is_the_trapezoid_rule_over_the_thresholds(rng):
    yt, yp = data("binary", rng, 200)
    m = M.AUC(num_thresholds=50)
    m.update_state(yt, yp)
    th = [-1e-7] + [(i + 1) / 49 for i in range(48)] + [1 + 1e-7]
    tp, fp, tn, fn = _loop_counts(yt, yp, th, np.ones((200, 1)))
    tpr, fpr = tp / (tp + fn), fp / (fp + tn)
    want = np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2)
    assert float(m.result()) == pytest.approx(want, abs=1e-6)
    # and with many thresholds it approaches the rank statistic (Mann-Whitney U)
    fine = M.AUC(num_thresholds=5000)
    fine.update_state(yt, yp)
    p, q = yp[yt == 1], yp[yt == 0]
    u = ((p[:, None] > q[None, :]).sum() + 0.5 * (p[:, None] == q[None, :]).sum()) / (p.size * q.size)
    assert float(fine.result()) == pytest.approx(u, abs=2e-3)


def test_pr_auc_interpolation_of_a_perfect_ranking_is_one():
    m = M.AUC(curve="PR")
    m.update_state([0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.8, 0.95])
    assert float(m.result()) == pytest.approx(1.0, abs=1e-6)
    for s in ("minoring", "majoring"):
        m = M.AUC(curve="PR", summation_method=s)
        m.update_state([0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.8, 0.95])
        assert 0.0 < float(m.result()) <= 1.0


def test_multi_label_auc_is_the_mean_of_per_label_aucs(rng):
    yt, yp = data("multilabel", rng, 100)
    per = []
    for j in range(3):
        m = M.AUC()
        m.update_state(yt[:, j], yp[:, j])
        per.append(float(m.result()))
    multi = M.AUC(multi_label=True)
    multi.update_state(yt, yp)
    assert float(multi.result()) == pytest.approx(np.mean(per), abs=1e-6)
    weighted = M.AUC(multi_label=True, label_weights=[1.0, 0.0, 3.0])
    weighted.update_state(yt, yp)
    assert float(weighted.result()) == pytest.approx((per[0] + 3 * per[2]) / 4, abs=1e-6)


def test_at_metrics_pick_the_best_feasible_threshold():
    yt = np.array([0, 0, 1, 1, 1, 0, 1])
    yp = np.array([0.1, 0.6, 0.4, 0.8, 0.9, 0.3, 0.7])
    m = M.PrecisionAtRecall(1.0, num_thresholds=11)
    m.update_state(yt, yp)
    assert float(m.result()) == pytest.approx(4 / 5)  # all positives above 0.3: 4 of 5 predicted
    r = M.RecallAtPrecision(1.0, num_thresholds=11)
    r.update_state(yt, yp)
    assert float(r.result()) == pytest.approx(3 / 4)  # above 0.6: 0.7, 0.8, 0.9, all positive


def test_accuracy_functions_against_numpy(rng):
    yt, yp = data("categorical", rng)
    assert np.array_equal(M.categorical_accuracy(yt, yp), (yt.argmax(1) == yp.argmax(1)).astype("f"))
    labels = yt.argmax(1)
    assert np.array_equal(M.sparse_categorical_accuracy(labels, yp),
                          M.sparse_categorical_accuracy(labels[:, None], yp))
    top2 = np.argsort(-yp, 1)[:, :2]
    assert np.array_equal(M.sparse_top_k_categorical_accuracy(labels, yp, k=2),
                          (top2 == labels[:, None]).any(1).astype("f"))
    assert np.array_equal(M.top_k_categorical_accuracy(yt, yp, k=2),
                          (top2 == labels[:, None]).any(1).astype("f"))
    # ties at the k-th place count as inside (tf.math.in_top_k)
    assert M.sparse_top_k_categorical_accuracy([2], [[0.5, 0.2, 0.5]], k=1)[0] == 1.0
    b_t, b_p = data("multilabel", rng)
    assert np.allclose(M.binary_accuracy(b_t, b_p), ((b_p > 0.5) == b_t).mean(1))


def test_sparse_accuracy_native_count_equals_the_numpy_path(rng):
    yt, yp = data("sparse", rng, 257)
    native = M.SparseCategoricalAccuracy()
    native.update_state(yt, yp)
    numpy = M.SparseCategoricalAccuracy()
    numpy.update_state(yt, yp, sample_weight=np.ones(257))
    assert float(native.result()) == float(numpy.result()) == pytest.approx(
        (yp.argmax(1) == yt).mean())
    native.add_counts(3, 3)
    assert native.total == numpy.total + 3 and native.count == 260


def test_regression_and_crossentropy_against_numpy(rng):
    yt, yp = data("regression", rng)
    w = rng.random(N)
    m = M.MeanSquaredError()
    m.update_state(yt, yp, sample_weight=w)
    per = ((yt - yp) ** 2).mean(1)
    assert float(m.result()) == pytest.approx((per * w).sum() / w.sum(), rel=1e-6)
    r = M.RootMeanSquaredError()
    r.update_state(yt, yp, sample_weight=w)
    assert float(r.result()) == pytest.approx(np.sqrt((((yt - yp) ** 2) * w[:, None]).sum()
                                                      / (2 * w.sum())), rel=1e-6)
    r2 = M.R2Score()
    r2.update_state(yt, yp)
    ss_res = ((yt - yp) ** 2).sum(0)
    ss_tot = ((yt - yt.mean(0)) ** 2).sum(0)
    assert float(r2.result()) == pytest.approx(np.mean(1 - ss_res / ss_tot), rel=1e-5)
    ct, cp = data("categorical", rng)
    c = M.CategoricalCrossentropy()
    c.update_state(ct, cp)
    assert float(c.result()) == pytest.approx(-(ct * np.log(cp)).sum(1).mean(), rel=1e-5)
    s = M.SparseCategoricalCrossentropy(ignore_class=1)
    labels = ct.argmax(1)
    s.update_state(labels, cp)
    keep = labels != 1
    assert float(s.result()) == pytest.approx(-np.log(cp[keep, labels[keep]]).mean(), rel=1e-5)
    bt, bp = data("multilabel", rng)
    b = M.BinaryCrossentropy(from_logits=True)
    z = np.log(bp / (1 - bp))
    b.update_state(bt, z)
    want = -(bt * np.log(bp) + (1 - bt) * np.log(1 - bp)).mean(1).mean()
    assert float(b.result()) == pytest.approx(want, rel=1e-5)


def test_mean_sum_and_weight_shapes():
    m = M.Mean()
    m.update_state([[1.0, 3.0], [5.0, 7.0]], sample_weight=[1.0, 0.0])  # (n,) weights on (n, d)
    assert float(m.result()) == 2.0
    s = M.Sum()
    s.update_state([1.0, 2.0, 3.0], sample_weight=[[1.0], [1.0], [2.0]])
    assert float(s.result()) == 9.0
    with pytest.raises(ValueError, match="sample_weight"):
        M.Mean().update_state([1.0, 2.0, 3.0], sample_weight=[1.0, 2.0])


# -- lookup --------------------------------------------------------------------------------------

def test_get_accuracy_follows_output_shape_and_loss():
    scce = losses.SparseCategoricalCrossentropy()
    for name in ("accuracy", "acc"):
        m = M.get(name, loss=scce, output_shape=(None, 10))
        assert type(m) is M.SparseCategoricalAccuracy and m.name == name
        m = M.get(name, loss=scce, output_shape=(None, 1))
        assert type(m) is M.BinaryAccuracy and m.name == name
        assert type(M.get(name, loss="binary_crossentropy")) is M.BinaryAccuracy
        assert type(M.get(name, loss="categorical_crossentropy")) is M.CategoricalAccuracy
    assert type(M.get("crossentropy", loss=scce)) is M.SparseCategoricalCrossentropy
    assert type(M.get("ce", loss="binary_crossentropy", output_shape=(None, 1))) is \
        M.BinaryCrossentropy
    assert M.get("ce", loss=scce).name == "ce"


def test_get_accuracy_without_a_hint_decides_from_the_first_batch():
    m = M.get("accuracy")
    assert m.name == "accuracy"
    m.update_state([[1.0], [0.0]], [[0.8], [0.7]])  # one unit: binary
    assert float(m.result()) == 0.5
    assert m.get_config()["fn"] == "binary_accuracy"
    m = M.get("accuracy")
    m.update_state([2, 0], [[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])  # sparse labels
    assert float(m.result()) == 1.0 and m.get_config()["fn"] == "sparse_categorical_accuracy"
    m = M.get("accuracy")
    m.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])  # one-hot
    assert float(m.result()) == 0.5 and m.get_config()["fn"] == "categorical_accuracy"
    # saved before its first batch, it reloads undecided
    for name in ("accuracy", "crossentropy"):
        m = M.get(name)
        m._set_state(m._get_state())
        back = M.deserialize(M.serialize(m))
        assert back.name == name
        back.update_state([[0, 0, 1], [0, 1, 0]], [[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
        assert back.get_config()["fn"] == ("categorical_accuracy" if name == "accuracy"
                                           else "categorical_crossentropy")


def test_get_names_classes_functions_and_losses():
    assert type(M.get("AUC")) is M.AUC
    assert type(M.get(M.Precision)) is M.Precision
    for alias, fn in [("mse", "mean_squared_error"), ("MAE", "mean_absolute_error"),
                      ("mape", "mean_absolute_percentage_error"), ("bce", "binary_crossentropy")]:
        m = M.get(alias)
        assert type(m) is M.MeanMetricWrapper and m.name == alias
        assert m.get_config()["fn"] == fn
    inst = M.Recall()
    assert M.get(inst) is inst

    def my_metric(y_true, y_pred):
        return np.abs(y_true - y_pred)
    m = M.get(my_metric)
    assert m.name == "my_metric"
    m.update_state([1.0, 2.0], [2.0, 4.0], sample_weight=[1.0, 3.0])
    assert float(m.result()) == pytest.approx((1 + 6) / 4)
    # a Loss object: the running mean of its batch values, named after the loss
    lm = M.get(losses.SparseCategoricalCrossentropy(name="xent"))
    assert lm.name == "xent"
    p = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
    lm.update_state([1, 1], p)
    lm.update_state([0], p[:1])
    assert float(lm.result()) == pytest.approx((-(np.log(0.8) + np.log(0.4)) / 2 - np.log(0.2)) / 2,
                                               rel=1e-5)
    back = M.deserialize(M.serialize(lm))
    assert back.name == "xent" and isinstance(back._fn, losses.SparseCategoricalCrossentropy)


def test_deserialize_reads_tf_keras_records():
    rec = {"module": "keras.metrics", "class_name": "MeanMetricWrapper",
           "config": {"name": "w", "dtype": "float32",
                      "fn": {"module": "builtins", "class_name": "function",
                             "config": "mean_absolute_error", "registered_name": "function"}},
           "registered_name": None}
    m = M.deserialize(rec)
    assert m.name == "w" and float(m([[1.0, 3.0]], [[2.0, 1.0]])) == pytest.approx(1.5)
    h5 = {"class_name": "MeanMetricWrapper",
          "config": {"name": "accuracy", "dtype": "float32", "fn": "sparse_categorical_accuracy"}}
    assert M.deserialize(h5).name == "accuracy"
    assert type(M.deserialize({"class_name": "AUC", "config": {"curve": "PR"}})) is M.AUC


# -- errors --------------------------------------------------------------------------------------

def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown metric 'aucc'.*'AUC'.*'mse'"):
        M.get("aucc")
    with pytest.raises(ValueError, match=r"Unknown metric class 'Nope'.*'Precision'"):
        M.deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(ValueError, match=r"Unknown metric function 'nope'.*'mean_squared_error'"):
        M.MeanMetricWrapper.from_config({"name": "x", "fn": "nope"})
    with pytest.raises(TypeError, match="Expected a metric"):
        M.get(3)


def test_bad_arguments_are_typed_errors_naming_them():
    with pytest.raises(ValueError, match=r"Threshold values must be in \[0, 1\]"):
        M.Precision(thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="curve"):
        M.AUC(curve="ROCK")
    with pytest.raises(ValueError, match="summation method"):
        M.AUC(summation_method="simpson")
    with pytest.raises(ValueError, match="num_thresholds"):
        M.AUC(num_thresholds=1)
    with pytest.raises(ValueError, match="num_labels"):
        M.AUC(num_labels=3)
    with pytest.raises(ValueError, match="label_weights"):
        M.AUC(label_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="recall"):
        M.PrecisionAtRecall(1.5)
    with pytest.raises(ValueError, match="class_aggregation"):
        M.R2Score(class_aggregation="mean")
    with pytest.raises(ValueError, match="num_regressors"):
        M.R2Score(num_regressors=-1)
    with pytest.raises(ValueError, match="R2Score expects 2D"):
        M.R2Score().update_state([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="multi_label"):
        M.AUC(multi_label=True).update_state([0, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="y_true"):
        M.Precision().update_state([[0, 1, 1]], [[0.2, 0.3]])
    with pytest.raises(ValueError, match="sample_weight"):
        M.AUC().update_state([0, 1, 1], [0.2, 0.3, 0.9], sample_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_id"):
        M.Recall(class_id=4).update_state([[0, 1]], [[0.2, 0.3]])
    with pytest.raises(ValueError, match="outside the valid range"):
        M.SparseCategoricalAccuracy().update_state([0, 3], np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="numeric"):
        M.MeanSquaredError().update_state(["a"], [1.0])


def test_a_subclass_keeps_its_state_in_add_weight_variables():
    class Positives(M.Metric):
        def __init__(self, name="positives", **kwargs):
            super().__init__(name=name, **kwargs)
            self.hits = self.add_weight("hits")

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.hits.assign_add(np.float32((np.asarray(y_pred) > 0.5).sum()))

        def result(self):
            return np.float32(self.hits.numpy())

    m = Positives()
    m.update_state(None, [0.2, 0.7, 0.9])
    saved = m._get_state()
    m.update_state(None, [0.8])
    assert float(m.result()) == 3.0 and [v.name for v in m.variables] == ["positives/hits:0"]
    m._set_state(saved)
    assert float(m.result()) == 2.0
    m.update_state(None, [0.8])
    assert float(m.result()) == 3.0 and m.variables[0] is m.hits
    m.reset_state()
    assert float(m.result()) == 0.0
