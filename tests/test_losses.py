"""fastckpt.losses against float64 NumPy references of Keras' formulas.

Forward values (every reduction, sample weights), finite-difference checks of every fused gradient
kernel, extreme inputs, typed errors for bad targets, and config round trips. The comparisons with
tf_keras itself are in tests/interop/test_losses_interop.py.
"""

import math

import numpy as np
import pytest

from fastckpt import keras, ops
from fastckpt import losses as L

EPS = 1e-7
pytestmark = pytest.mark.filterwarnings("ignore:In loss categorical_crossentropy:SyntaxWarning")


# --- float64 references (tf.keras' formulas) -------------------------------------------------------

def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


def _bce_elem(t, p, from_logits):
    if from_logits:
        return np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p)))
    pc = np.clip(p, EPS, 1 - EPS)
    return -(t * np.log(pc + EPS) + (1 - t) * np.log(1 - pc + EPS))


def reference(kind, t, p, **kw):
    """Per-sample losses (float64) over the last axis."""
    t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
    if kind == "mean_squared_error":
        return ((p - t) ** 2).mean(-1)
    if kind == "mean_absolute_error":
        return np.abs(p - t).mean(-1)
    if kind == "mean_absolute_percentage_error":
        return 100 * np.abs((t - p) / np.maximum(np.abs(t), EPS)).mean(-1)
    if kind == "mean_squared_logarithmic_error":
        return ((np.log(np.maximum(p, EPS) + 1) - np.log(np.maximum(t, EPS) + 1)) ** 2).mean(-1)
    if kind == "huber":
        d = kw.get("delta", 1.0)
        e = np.abs(p - t)
        return np.where(e <= d, 0.5 * e ** 2, d * e - 0.5 * d ** 2).mean(-1)
    if kind == "log_cosh":
        x = p - t
        return (x + _softplus(-2 * x) - np.log(2)).mean(-1)
    if kind == "poisson":
        return (p - t * np.log(p + EPS)).mean(-1)
    if kind in ("hinge", "squared_hinge"):
        if np.all((t == 0) | (t == 1)):
            t = 2 * t - 1
        h = np.maximum(1 - t * p, 0)
        return (h ** 2 if kind == "squared_hinge" else h).mean(-1)
    if kind == "categorical_hinge":
        return np.maximum(((1 - t) * p).max(-1) - (t * p).sum(-1) + 1, 0)
    if kind == "kl_divergence":
        tc, pc = np.clip(t, EPS, 1), np.clip(p, EPS, 1)
        return (tc * np.log(tc / pc)).sum(-1)
    if kind == "cosine_similarity":
        tn = t / np.sqrt(np.maximum((t * t).sum(-1, keepdims=True), 1e-12))
        pn = p / np.sqrt(np.maximum((p * p).sum(-1, keepdims=True), 1e-12))
        return -(tn * pn).sum(-1)
    ls = kw.get("label_smoothing", 0.0)
    fl = kw.get("from_logits", False)
    if kind == "binary_crossentropy":
        t = t * (1 - ls) + 0.5 * ls
        return _bce_elem(t, p, fl).mean(-1)
    if kind == "binary_focal_crossentropy":
        t = t * (1 - ls) + 0.5 * ls
        s = _sigmoid(p) if fl else p
        pt = t * s + (1 - t) * (1 - s)
        out = (1 - pt) ** kw.get("gamma", 2.0) * _bce_elem(t, p, fl)
        if kw.get("apply_class_balancing"):
            a = kw.get("alpha", 0.25)
            out = (t * a + (1 - t) * (1 - a)) * out
        return out.mean(-1)
    if kind == "categorical_crossentropy":
        t = t * (1 - ls) + ls / t.shape[-1]
        if fl:
            z = p - p.max(-1, keepdims=True)
            logq = z - np.log(np.exp(z).sum(-1, keepdims=True))
        else:
            logq = np.log(np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS))
        return -(t * logq).sum(-1)
    raise AssertionError(kind)


def reference_sparse(labels, p, from_logits, ignore_class=None):
    p = np.asarray(p, np.float64)
    if from_logits:
        z = p - p.max(-1, keepdims=True)
        logq = z - np.log(np.exp(z).sum(-1, keepdims=True))
    else:
        c = np.clip(p, EPS, 1 - EPS)
        logq = np.log(c) - np.log(c.sum(-1, keepdims=True))
    lab = np.asarray(labels)
    valid = np.ones(lab.shape, bool) if ignore_class is None else lab != ignore_class
    safe = np.where(valid, lab, 0)
    out = -np.take_along_axis(logq, safe[..., None], -1)[..., 0]
    return np.where(valid, out, 0.0), valid


def reduce_ref(per, sw, reduction, mask=None):
    per = np.asarray(per, np.float64)
    w = np.ones_like(per) if sw is None else np.broadcast_to(
        np.asarray(sw, np.float64).reshape(np.shape(sw) + (1,) * (per.ndim - np.ndim(sw))), per.shape)
    if mask is not None:
        w = w * mask
        if reduction in ("auto", "sum_over_batch_size"):
            w = w * (mask.size / max(mask.sum(), 1))
    weighted = per * w
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return weighted.sum()
    return weighted.sum() / weighted.size


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def inputs(kind, rng, shape, logits=False):
    f = np.float32
    if kind in ("binary_crossentropy", "binary_focal_crossentropy"):
        t = (rng.random(shape) < 0.5).astype(f)
        return t, ((3 * rng.normal(size=shape)) if logits else rng.uniform(0.05, 0.95, shape)).astype(f)
    if kind in ("categorical_crossentropy", "categorical_hinge"):
        t = np.eye(shape[-1], dtype=f)[rng.integers(0, shape[-1], shape[:-1])]
        z = 2 * rng.normal(size=shape)
        if kind == "categorical_hinge" or logits:
            return t, z.astype(f)
        return t, rng.uniform(0.1, 1.5, shape).astype(f)  # unnormalised probabilities
    if kind == "kl_divergence":
        return _softmax(rng.normal(size=shape)).astype(f), _softmax(rng.normal(size=shape)).astype(f)
    if kind in ("poisson", "mean_squared_logarithmic_error"):
        return rng.uniform(0, 3, shape).astype(f), rng.uniform(0.1, 3, shape).astype(f)
    if kind in ("hinge", "squared_hinge"):
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(f), rng.normal(size=shape).astype(f)
    if kind == "mean_absolute_percentage_error":
        return rng.uniform(0.5, 2, shape).astype(f) * np.where(rng.random(shape) < 0.5, -1, 1).astype(f), \
            rng.normal(size=shape).astype(f)
    return rng.normal(size=shape).astype(f), rng.normal(size=shape).astype(f)


# (class, kernel kind, constructor kwargs)
CASES = [
    (L.MeanSquaredError, "mean_squared_error", {}),
    (L.MeanAbsoluteError, "mean_absolute_error", {}),
    (L.MeanAbsolutePercentageError, "mean_absolute_percentage_error", {}),
    (L.MeanSquaredLogarithmicError, "mean_squared_logarithmic_error", {}),
    (L.Huber, "huber", {}),
    (L.Huber, "huber", {"delta": 0.5}),
    (L.LogCosh, "log_cosh", {}),
    (L.Poisson, "poisson", {}),
    (L.KLDivergence, "kl_divergence", {}),
    (L.CosineSimilarity, "cosine_similarity", {}),
    (L.Hinge, "hinge", {}),
    (L.SquaredHinge, "squared_hinge", {}),
    (L.CategoricalHinge, "categorical_hinge", {}),
    (L.BinaryCrossentropy, "binary_crossentropy", {}),
    (L.BinaryCrossentropy, "binary_crossentropy", {"label_smoothing": 0.2}),
    (L.BinaryCrossentropy, "binary_crossentropy", {"from_logits": True}),
    (L.BinaryFocalCrossentropy, "binary_focal_crossentropy", {}),
    (L.BinaryFocalCrossentropy, "binary_focal_crossentropy",
     {"apply_class_balancing": True, "alpha": 0.4, "gamma": 1.5, "label_smoothing": 0.1}),
    (L.BinaryFocalCrossentropy, "binary_focal_crossentropy", {"from_logits": True, "gamma": 3.0}),
    (L.CategoricalCrossentropy, "categorical_crossentropy", {}),
    (L.CategoricalCrossentropy, "categorical_crossentropy", {"label_smoothing": 0.1}),
    (L.CategoricalCrossentropy, "categorical_crossentropy", {"from_logits": True}),
    (L.CategoricalCrossentropy, "categorical_crossentropy", {"from_logits": True, "label_smoothing": 0.3}),
]
CASE_IDS = [f"{c.__name__}-{kw}" for c, _, kw in CASES]
REDUCTIONS = ("auto", "sum_over_batch_size", "sum", "none")


# --- forward ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kind,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", [(7, 5), (7, 1), (3, 4, 6)])
def test_forward_matches_the_reference(rng, cls, kind, kw, shape):
    t, p = inputs(kind, rng, shape, kw.get("from_logits", False))
    per = reference(kind, t, p, **kw)
    fn = getattr(L, cls(**kw).fn.__name__)
    fn_kw = {k: v for k, v in kw.items()}
    np.testing.assert_allclose(fn(t, p, **fn_kw), per, rtol=1e-5, atol=1e-6)
    weights = [None, rng.uniform(0, 2, shape[0]).astype(np.float32), np.float32(0.7)]
    if len(shape) == 3:
        weights.append(rng.uniform(0, 2, shape[:2]).astype(np.float32))
    for reduction in REDUCTIONS:
        loss = cls(reduction=reduction, **kw)
        for sw in weights:
            got = loss(t, p, sample_weight=sw)
            np.testing.assert_allclose(got, reduce_ref(per, sw, reduction), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{reduction} {None if sw is None else np.shape(sw)}")
            assert np.asarray(got).dtype == np.float32


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("ignore_class", [None, 0, -1])
@pytest.mark.parametrize("shape", [(9, 4), (3, 5, 4)])
def test_sparse_forward_matches_the_reference(rng, from_logits, ignore_class, shape):
    labels = rng.integers(0, shape[-1], shape[:-1])
    if ignore_class is not None:
        labels.flat[::4] = ignore_class
    z = 2 * rng.normal(size=shape)
    p = (z if from_logits else _softmax(z)).astype(np.float32)
    per, valid = reference_sparse(labels, p, from_logits, ignore_class)
    np.testing.assert_allclose(L.sparse_categorical_crossentropy(labels, p, from_logits=from_logits,
                                                                 ignore_class=ignore_class),
                               per, rtol=1e-5, atol=1e-6)
    sw = rng.uniform(0, 2, shape[0]).astype(np.float32)
    for reduction in REDUCTIONS:
        loss = L.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=ignore_class,
                                               reduction=reduction)
        for w in (None, sw):
            want = reduce_ref(per, w, reduction, None if ignore_class is None else valid)
            np.testing.assert_allclose(loss(labels, p, sample_weight=w), want, rtol=1e-5, atol=1e-6)


def test_all_samples_ignored_gives_zero_not_nan():
    loss = L.SparseCategoricalCrossentropy(ignore_class=1)
    assert loss([1, 1], np.full((2, 3), 1 / 3, np.float32)) == 0.0  # Keras 3; tf_keras 2 gives NaN


def test_rank_one_targets_of_a_single_output_column_are_per_sample():
    """(n,) targets with (n, 1) predictions: one loss per sample, as fit and Keras 3 compute."""
    y = np.arange(4, dtype=np.float32)
    p = (y + 0.5).reshape(4, 1)
    assert L.MeanSquaredError(reduction="sum")(y, p) == pytest.approx(1.0)
    np.testing.assert_allclose(L.MeanSquaredError(reduction="none")(y, p), [0.25] * 4)
    np.testing.assert_allclose(L.MeanSquaredError()(y, p, sample_weight=[1, 0, 0, 0]), 0.25 / 4)
    # The plain function broadcasts, as TensorFlow does for arrays.
    assert L.mean_squared_error(y, p).shape == (4,)
    np.testing.assert_allclose(L.mean_squared_error(y, p)[0], np.mean((0.5 - y) ** 2))


def test_hinge_maps_binary_labels_only_when_all_are_binary():
    p = np.array([[0.3, -0.4]], np.float32)
    np.testing.assert_allclose(L.hinge([[1.0, 0.0]], p), np.mean([0.7, 0.6]), rtol=1e-6)
    np.testing.assert_allclose(L.hinge([[1.0, -1.0]], p), np.mean([0.7, 0.6]), rtol=1e-6)
    np.testing.assert_allclose(L.hinge([[1.0, 0.5]], p), np.mean([0.7, 1.2]), rtol=1e-6)


def test_aliases_are_the_functions():
    assert L.mse is L.MSE is L.mean_squared_error and L.mae is L.mean_absolute_error
    assert L.mape is L.mean_absolute_percentage_error and L.msle is L.mean_squared_logarithmic_error
    assert L.kld is L.KLD is L.kullback_leibler_divergence is L.kl_divergence
    assert L.logcosh is L.log_cosh and L.huber_loss is L.huber and L.bce is L.binary_crossentropy
    assert keras.losses.MeanSquaredError is L.MeanSquaredError


# --- gradients -------------------------------------------------------------------------------------

def _fd_grad(f, p, h=1e-4):
    g = np.zeros_like(p, np.float64)
    for idx in np.ndindex(p.shape):
        up, dn = p.astype(np.float64).copy(), p.astype(np.float64).copy()
        up[idx] += h
        dn[idx] -= h
        g[idx] = (f(up) - f(dn)) / (2 * h)
    return g


def _kernel_grad(loss, t, p, sw=None, logits=False, scale=1.0):
    prepared = loss._prepare_targets(t, p.shape[0], (None,) + p.shape[1:])
    grad = np.full(p.shape, np.nan, np.float32)
    total = loss._fwd_bwd(prepared, p, sw, grad, scale, logits)
    return total, grad


@pytest.mark.parametrize("cls,kind,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_every_gradient_kernel_matches_finite_differences(rng, cls, kind, kw, weighted):
    t, p = inputs(kind, rng, (5, 4), kw.get("from_logits", False))
    sw = rng.uniform(0.2, 2, 5).astype(np.float32) if weighted else None
    w = np.ones(5) if sw is None else sw.astype(np.float64)
    total, grad = _kernel_grad(cls(**kw), t, p, sw)
    f = lambda q: float((w * reference(kind, t, q, **kw)).sum())  # noqa: E731
    assert total == pytest.approx(f(p), rel=1e-5, abs=1e-6)
    want = _fd_grad(f, p)
    np.testing.assert_allclose(grad, want, rtol=2e-3, atol=2e-4 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("cls,kind,kw", [c for c in CASES if c[2].get("from_logits") is not True
                                         and c[0] in (L.BinaryCrossentropy, L.BinaryFocalCrossentropy,
                                                      L.CategoricalCrossentropy)])
def test_folded_activation_gradient_matches_finite_differences(rng, cls, kind, kw):
    """logits=True: y_pred holds the pre-activations of the output's sigmoid/softmax."""
    t, z = inputs(kind, rng, (5, 4), logits=True)
    loss = cls(**kw)
    assert loss.foldable_activation == ("softmax" if kind == "categorical_crossentropy" else "sigmoid")
    total, grad = _kernel_grad(loss, t, z, logits=True)
    f = lambda q: float(reference(kind, t, q, from_logits=True,  # noqa: E731
                                  **{k: v for k, v in kw.items() if k != "from_logits"}).sum())
    assert total == pytest.approx(f(z), rel=1e-5)
    np.testing.assert_allclose(grad, _fd_grad(f, z), rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("ignore_class", [None, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_gradient_matches_finite_differences(rng, from_logits, ignore_class, weighted):
    labels = rng.integers(0, 4, 6)
    if ignore_class is not None:
        labels[::3] = ignore_class
    z = 2 * rng.normal(size=(6, 4))
    p = (z if from_logits else rng.uniform(0.05, 0.9, (6, 4))).astype(np.float32)
    sw = rng.uniform(0.2, 2, 6).astype(np.float32) if weighted else None
    w = np.ones(6) if sw is None else sw.astype(np.float64)
    loss = L.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=ignore_class)
    total, grad = _kernel_grad(loss, labels, p, sw)

    def f(q):
        per, valid = reference_sparse(labels, q, from_logits, ignore_class)
        return float((w * per).sum() * (per.size / valid.sum()))  # sum over the counted samples

    assert total == pytest.approx(f(p), rel=1e-5)
    np.testing.assert_allclose(grad, _fd_grad(f, p), rtol=2e-3, atol=2e-4)


def test_sparse_path_without_weights_is_todays_kernel_bit_for_bit(rng):
    """Plain sparse CE goes through ops.sparse_ce, as the fused trainer computes it."""
    labels = rng.integers(0, 10, 64).astype(np.int32)
    z = rng.normal(size=(64, 10)).astype(np.float32)
    for from_logits in (True, False):
        p = z if from_logits else _softmax(z).astype(np.float32)
        g1, g2 = np.empty_like(p), np.empty_like(p)
        loss = L.SparseCategoricalCrossentropy(from_logits=from_logits)
        total = loss._fwd_bwd(loss._prepare_targets(labels, 64, (None, 10)), p, None, g1, 1 / 64, False)
        _, want = ops.sparse_ce(p, labels, from_logits, L.EPSILON, grad=g2, grad_scale=1 / 64)
        assert total == want and np.array_equal(g1, g2)
        # The weighted kernel agrees with it (to rounding) when every weight is 1.
        g3 = np.empty_like(p)
        total3 = loss._fwd_bwd(labels, p, np.ones(64, np.float32), g3, 1 / 64, False)
        assert total3 == pytest.approx(want, rel=1e-6)
        np.testing.assert_allclose(g3, g2, rtol=1e-5, atol=1e-7)


def test_rank_three_outputs_average_each_samples_losses(rng):
    """(batch, steps, classes): value / batch is Keras' loss, for every reduction's convention."""
    t, p = inputs("mean_squared_error", rng, (3, 4, 5))
    per = reference("mean_squared_error", t, p)
    sw = rng.uniform(0, 2, 3).astype(np.float32)
    total, grad = _kernel_grad(L.MeanSquaredError(), t, p, sw, scale=1 / 3)
    assert total / 3 == pytest.approx(reduce_ref(per, sw, "auto"), rel=1e-5)
    f = lambda q: reduce_ref(reference("mean_squared_error", t, q), sw, "auto")  # noqa: E731
    np.testing.assert_allclose(grad, _fd_grad(f, p), rtol=2e-3, atol=2e-5)
    total_sum, _ = _kernel_grad(L.MeanSquaredError(reduction="sum"), t, p, sw)
    assert total_sum == pytest.approx(reduce_ref(per, sw, "sum"), rel=1e-5)


def test_categorical_crossentropy_logit_gradient_is_softmax_minus_labels():
    """TensorFlow's gradient, also for labels that do not sum to one (then it is not the exact
    derivative; one-hot and smoothed labels always sum to one)."""
    z = np.array([[1.0, 2.0, 3.0]], np.float32)
    t = np.array([[0.5, 0.9, 0.3]], np.float32)
    _, grad = _kernel_grad(L.CategoricalCrossentropy(from_logits=True), t, z)
    np.testing.assert_allclose(grad, _softmax(z) - t, rtol=1e-6)


def test_gradient_is_zero_where_probabilities_are_clipped():
    t = np.array([[1, 0, 1, 0]], np.float32)
    p = np.array([[0.0, 1.0, 1e-7, 1 - 1e-7]], np.float32)  # clipped, clipped, on the bounds
    _, g = _kernel_grad(L.BinaryCrossentropy(), t, p)
    assert g[0, 0] == 0 and g[0, 1] == 0 and g[0, 2] < -1e5 and g[0, 3] > 1e5
    _, g = _kernel_grad(L.SparseCategoricalCrossentropy(), [0], np.array([[0.0, 0.5, 0.5]], np.float32),
                        np.ones(1, np.float32))
    assert g[0, 0] == 0


def test_totals_do_not_depend_on_the_thread_count(rng):
    t, p = inputs("binary_crossentropy", rng, (5000, 20))
    labels = rng.integers(0, 20, 5000).astype(np.int32)
    sw = rng.random(5000).astype(np.float32)
    before = ops.num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            ops.set_num_threads(n)
            g1, g2 = np.empty_like(p), np.empty_like(p)
            a = L.BinaryCrossentropy()._fwd_bwd(t, p, sw, g1, 1e-3, False)
            b = L.SparseCategoricalCrossentropy()._fwd_bwd(labels, p, sw, g2, 1e-3, False)
            results.append((a, b, g1, g2))
    finally:
        ops.set_num_threads(before)
    for a, b, g1, g2 in results[1:]:
        assert a == results[0][0] and b == results[0][1]
        assert np.array_equal(g1, results[0][2]) and np.array_equal(g2, results[0][3])


# --- extreme inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kind,kw", CASES + [
    (L.BinaryFocalCrossentropy, "binary_focal_crossentropy", {"gamma": 0.5}),
    (L.BinaryFocalCrossentropy, "binary_focal_crossentropy", {"gamma": 0.5, "from_logits": True}),
], ids=CASE_IDS + ["focal-gamma0.5", "focal-gamma0.5-logits"])
def test_extreme_inputs_stay_finite(cls, kind, kw):
    if kw.get("from_logits"):
        p = np.array([[1e4, -1e4, 88.0, -88.0], [0.0, 1e4, -1e4, 30.0]], np.float32)
    elif kind in ("binary_crossentropy", "binary_focal_crossentropy", "kl_divergence",
                  "poisson", "mean_squared_logarithmic_error"):
        p = np.array([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.5, 0.0]], np.float32)
    elif kind == "categorical_crossentropy":
        p = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], np.float32)
    else:
        p = np.array([[1e4, -1e4, 0.0, 3e3], [0.0, 0.0, 0.0, 0.0]], np.float32)
    t = np.array([[1, 0, 0, 1], [0, 1, 0, 0]], np.float32)
    loss = cls(**kw)
    assert np.all(np.isfinite(loss(t, p, sample_weight=[1.0, 2.0])))
    _, grad = _kernel_grad(loss, t, p, np.array([1.0, 2.0], np.float32))
    assert np.all(np.isfinite(grad))


def test_sparse_extreme_inputs_stay_finite():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 50.0]], np.float32)
    for from_logits, p in ((True, z), (False, np.array([[0, 1, 0], [1, 0, 0]], np.float32))):
        loss = L.SparseCategoricalCrossentropy(from_logits=from_logits)
        assert np.all(np.isfinite(loss([1, 0], p, sample_weight=[1, 1])))
        _, g = _kernel_grad(loss, [1, 0], p, np.ones(2, np.float32))
        assert np.all(np.isfinite(g))


# --- bad input -------------------------------------------------------------------------------------

def test_bad_sparse_labels_are_typed_errors():
    p = np.full((3, 4), 0.25, np.float32)
    loss = L.SparseCategoricalCrossentropy()
    with pytest.raises(ValueError, match=r"label value of 4 \(index 2 of y_true\).*\[0, 4\)"):
        loss([0, 1, 4], p)
    with pytest.raises(ValueError, match=r"label value of -1 .*index 1 of y\)"):
        loss._prepare_targets([0, -1, 2], 3, (None, 4), "y")
    with pytest.raises(ValueError, match="non-integral value 1.5"):
        loss([0, 1.5, 2], p)
    with pytest.raises(ValueError, match=r"sparse labels of shape \(3,\) or \(3, 1\), got shape \(3, 4\)"):
        loss(np.eye(3, 4), p)
    with pytest.raises(TypeError, match="numeric class labels"):
        loss(np.array(["a", "b", "c"]), p)
    with pytest.raises(ValueError, match=r"label value of 9 \(index 0 of y_val\)"):
        L.SparseCategoricalCrossentropy(ignore_class=-1)._prepare_targets([9, -1, 0], 3, (None, 4), "y_val")
    assert list(L.SparseCategoricalCrossentropy(ignore_class=-1)._prepare_targets([3, -1, 0], 3, (None, 4))) \
        == [3, -1, 0]
    with pytest.raises(TypeError, match="ignore_class"):
        L.SparseCategoricalCrossentropy(ignore_class="background")


def test_target_shapes_are_checked_against_the_output():
    bce = L.BinaryCrossentropy()
    y = bce._prepare_targets(np.array([0, 1, 1]), 3, (None, 1), "y")
    assert y.shape == (3, 1) and y.dtype == np.float32  # (n,) targets of a (n, 1) output
    with pytest.raises(ValueError, match=r"Expected y of shape \(3, 1\).*got \(3, 2\)"):
        bce._prepare_targets(np.zeros((3, 2)), 3, (None, 1), "y")
    with pytest.raises(ValueError, match="to hold 3 samples"):
        bce._prepare_targets(np.zeros((4, 1)), 3, (None, 1), "y")
    with pytest.raises(ValueError, match="need sparse_categorical_crossentropy"):
        L.CategoricalCrossentropy()._prepare_targets(np.zeros(3, int), 3, (None, 10), "y")
    with pytest.raises(TypeError, match="y_val to be a real numeric array"):
        L.MeanSquaredError()._prepare_targets(np.array(["a"] * 3), 3, (None, 1), "y_val")
    with pytest.raises(ValueError, match="Shapes .* incompatible"):
        L.categorical_crossentropy(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="does not broadcast"):
        L.mean_squared_error(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="y_pred to be a real numeric array"):
        L.mean_squared_error([1.0], ["x"])
    with pytest.raises(ValueError, match="axis"):
        L.categorical_crossentropy(np.zeros((2, 3)), np.ones((2, 3)), axis=True)


def test_unknown_output_dims_take_the_targets_and_batch_axis_losses_cannot_train(rng):
    y = L.MeanSquaredError()._prepare_targets(np.zeros((2, 7, 3)), 2, (None, None, 3))
    assert y.shape == (2, 7, 3)
    lab = L.SparseCategoricalCrossentropy()._prepare_targets(np.zeros((2, 7), int), 2, (None, None, 3))
    assert lab.shape == (2, 7) and lab.dtype == np.int32
    t, p = inputs("binary_crossentropy", rng, (4, 3))
    with pytest.raises(ValueError, match="axis=0 reduces the batch axis"):
        L.BinaryCrossentropy(axis=0)._fwd_bwd(t, p, None, np.empty_like(p), 0.25, False)


def test_moved_class_axis_trains_like_the_last(rng):
    """axis=1 of a (batch, classes, steps) output: the same gradient as the transposed problem."""
    t, p = inputs("categorical_crossentropy", rng, (3, 4, 5))
    total, grad = _kernel_grad(L.CategoricalCrossentropy(axis=1), np.swapaxes(t, 1, 2), np.swapaxes(p, 1, 2))
    want_total, want = _kernel_grad(L.CategoricalCrossentropy(), t, p)
    assert total == pytest.approx(want_total, rel=1e-6)
    np.testing.assert_allclose(np.swapaxes(grad, 1, 2), want, rtol=1e-6)


def test_sample_weights_of_the_wrong_shape_are_typed_errors(rng):
    t, p = inputs("mean_squared_error", rng, (4, 3))
    loss = L.MeanSquaredError()
    with pytest.raises(ValueError, match=r"sample_weight of shape \(5,\)"):
        loss(t, p, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match=r"sample_weight of shape \(4, 2\)"):
        loss(t, p, sample_weight=np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"Expected sample_weight of shape \(4,\)"):
        loss._fwd_bwd(t, p, np.ones(5, np.float32), None, 1.0, False)
    with pytest.raises(TypeError, match="sample_weight"):
        loss(t, p, sample_weight=["a"] * 4)


def test_unknown_names_and_reductions_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown loss 'msee'; expected one of \[.*'mse'.*\]"):
        L.get("msee")
    with pytest.raises(ValueError, match=r"Unknown loss class 'Hubber'.*'Huber'"):
        L.deserialize({"class_name": "Hubber", "config": {}})
    with pytest.raises(ValueError, match=r"Invalid reduction 'avg'.*'sum_over_batch_size'"):
        L.MeanSquaredError(reduction="avg")
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['beta'\]"):
        L.Huber(beta=2)
    with pytest.raises(ValueError, match="wraps the function 'mean_absolute_error'"):
        L.MeanSquaredError.from_config({"name": "m", "fn": "mean_absolute_error"})
    with pytest.raises(TypeError, match="Expected a loss name"):
        L.get(3.5)


# --- configs ---------------------------------------------------------------------------------------

NAMES = {
    "mse": L.MeanSquaredError, "MSE": L.MeanSquaredError, "mean_squared_error": L.MeanSquaredError,
    "mae": L.MeanAbsoluteError, "MAE": L.MeanAbsoluteError, "mape": L.MeanAbsolutePercentageError,
    "MAPE": L.MeanAbsolutePercentageError, "msle": L.MeanSquaredLogarithmicError,
    "MSLE": L.MeanSquaredLogarithmicError, "kld": L.KLDivergence, "KLD": L.KLDivergence,
    "kl_divergence": L.KLDivergence, "kullback_leibler_divergence": L.KLDivergence,
    "huber": L.Huber, "huber_loss": L.Huber, "logcosh": L.LogCosh, "log_cosh": L.LogCosh,
    "cosine_similarity": L.CosineSimilarity, "poisson": L.Poisson, "hinge": L.Hinge,
    "squared_hinge": L.SquaredHinge, "categorical_hinge": L.CategoricalHinge,
    "bce": L.BinaryCrossentropy, "BCE": L.BinaryCrossentropy, "binary_crossentropy": L.BinaryCrossentropy,
    "binary_focal_crossentropy": L.BinaryFocalCrossentropy,
    "categorical_crossentropy": L.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": L.SparseCategoricalCrossentropy,
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_name_resolves(name):
    assert type(L.get(name)) is NAMES[name]
    assert L.deserialize(name) is getattr(L, name)  # a function name gives the function, as tf.keras
    assert type(L.get(getattr(L, name))) is NAMES[name]
    assert type(L.get(NAMES[name].__name__)) is NAMES[name]


CONFIGS = [
    L.BinaryCrossentropy(from_logits=True, label_smoothing=0.1, axis=0, reduction="sum", name="b"),
    L.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4, gamma=1.0, from_logits=True),
    L.CategoricalCrossentropy(label_smoothing=0.2, reduction="none"),
    L.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1),
    L.Huber(delta=0.3), L.CosineSimilarity(axis=1), L.MeanSquaredError(name="m"),
    L.MeanAbsoluteError(), L.MeanAbsolutePercentageError(), L.MeanSquaredLogarithmicError(),
    L.LogCosh(), L.KLDivergence(), L.Poisson(), L.Hinge(), L.SquaredHinge(), L.CategoricalHinge(),
]


@pytest.mark.parametrize("loss", CONFIGS, ids=[type(c).__name__ for c in CONFIGS])
def test_configs_round_trip(loss):
    config = loss.get_config()
    assert type(loss).from_config(config).get_config() == config
    for entry in (L.serialize(loss), L.serialize(loss, use_legacy_format=True)):
        back = L.deserialize(entry)
        assert type(back) is type(loss) and back.get_config() == config
        assert L.get(entry).get_config() == config
    # tf_keras' "fn" and Keras 3's "dtype" entries are accepted.
    extra = dict(config, fn=loss.fn.__name__, dtype=None)
    assert type(loss).from_config(extra).get_config() == config


def test_keras3_reduction_spellings_and_function_entries():
    assert L.MeanSquaredError(reduction=None).reduction == "none"
    assert L.MeanSquaredError(reduction="mean").reduction == "sum_over_batch_size"
    entry = {"module": "builtins", "class_name": "function", "config": "mse", "registered_name": "function"}
    assert L.deserialize(entry) is L.mean_squared_error
    assert type(L.get(entry)) is L.MeanSquaredError
    assert L.serialize(L.mse) == dict(entry, config="mean_squared_error")
    assert L.serialize(L.mse, use_legacy_format=True) == "mean_squared_error"


def test_custom_functions_and_classes():
    def double_mae(y_true, y_pred):
        return 2 * L.mean_absolute_error(y_true, y_pred)

    loss = L.get(double_mae)
    assert isinstance(loss, L.LossFunctionWrapper) and loss.name == "double_mae"
    assert loss([[0.0, 2.0]], [[1.0, 1.0]]) == pytest.approx(2.0)
    back = L.deserialize(L.serialize(loss), custom_objects={"double_mae": double_mae})
    assert back.fn is double_mae

    class Scaled(L.Loss):
        def call(self, y_true, y_pred):
            return np.abs(np.asarray(y_true) - np.asarray(y_pred)).sum(-1)

    s = Scaled(reduction="sum", name="scaled")
    assert s([[0.0, 1.0]], [[1.0, 3.0]]) == pytest.approx(3.0)
    assert type(L.deserialize(L.serialize(s), custom_objects={"Scaled": Scaled})) is Scaled


def test_attributes_reach_the_kernel():
    loss = L.BinaryCrossentropy()
    loss.from_logits = True  # as a tf.keras script may set it after construction
    assert loss.get_config()["from_logits"] is True
    assert loss([[1.0]], np.zeros((1, 1), np.float32)) == pytest.approx(math.log(2), rel=1e-6)
